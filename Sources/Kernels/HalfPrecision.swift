// Conversions between float32 and IEEE half precision for moving KV to and from compact storage.

internal import CKernels

extension Ops {
    /// Writes `count` floats as half-precision values (round to nearest even). Exact for values that are
    /// already representable in half precision, as stored K/V are when ``emulateHalfPrecision`` is on.
    ///
    /// The conversion runs in CKernels (F16C when the CPU has it): Swift's `Float16` conversions compile
    /// to a software routine at the default target, which made converting a loaded chunk cost more than
    /// copying it.
    package static func convertToHalf(
        _ source: UnsafePointer<Float>,
        _ destination: UnsafeMutableRawPointer,
        count: Int
    ) {
        lmc_convert_f32_to_f16(source, destination.bindMemory(to: UInt16.self, capacity: count), Int64(count))
    }

    /// Widens `count` half-precision values to floats (always exact).
    package static func convertFromHalf(
        _ source: UnsafeRawPointer,
        _ destination: UnsafeMutablePointer<Float>,
        count: Int
    ) {
        lmc_convert_f16_to_f32(source.bindMemory(to: UInt16.self, capacity: count), destination, Int64(count))
    }
}

// Conversions between float32 and IEEE half precision for moving KV to and from compact storage.

extension Ops {
    /// Writes `count` floats as half-precision values (round to nearest even). Exact for values that are
    /// already representable in half precision, as stored K/V are when ``emulateHalfPrecision`` is on.
    package static func convertToHalf(
        _ source: UnsafePointer<Float>,
        _ destination: UnsafeMutableRawPointer,
        count: Int
    ) {
        let out = destination.bindMemory(to: Float16.self, capacity: count)
        for i in 0..<count { out[i] = Float16(source[i]) }
    }

    /// Widens `count` half-precision values to floats (always exact).
    package static func convertFromHalf(
        _ source: UnsafeRawPointer,
        _ destination: UnsafeMutablePointer<Float>,
        count: Int
    ) {
        let input = source.bindMemory(to: Float16.self, capacity: count)
        for i in 0..<count { destination[i] = Float(input[i]) }
    }
}

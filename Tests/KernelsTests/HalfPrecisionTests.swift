import Testing

@testable import Kernels

@Suite("Half precision")
struct HalfPrecisionTests {
    @Test("widening every half value and narrowing it back gives the same bits, as Swift's Float16 does", arguments: KernelISA.allCases)
    func roundTrip(isa: KernelISA) {
        defer { KernelISA.force(nil) }
        KernelISA.force(isa)
        let halves = (0...UInt16.max).map { $0 }
        var floats = [Float](repeating: 0, count: halves.count)
        var back = [UInt16](repeating: 0, count: halves.count)
        halves.withUnsafeBytes { h in
            floats.withUnsafeMutableBufferPointer { Ops.convertFromHalf(h.baseAddress!, $0.baseAddress!, count: halves.count) }
        }
        floats.withUnsafeBufferPointer { f in
            back.withUnsafeMutableBytes { Ops.convertToHalf(f.baseAddress!, $0.baseAddress!, count: halves.count) }
        }
        for (i, h) in halves.enumerated() {
            let reference = Float(Float16(bitPattern: h))
            if reference.isNaN {
                #expect(floats[i].isNaN && Float16(bitPattern: back[i]).isNaN)
            } else {
                #expect(floats[i].bitPattern == reference.bitPattern, "half \(h)")
                #expect(back[i] == h, "half \(h)")
            }
        }
    }

    @Test("narrowing rounds to nearest even, as Swift's Float16 does", arguments: KernelISA.allCases)
    func rounding(isa: KernelISA) {
        defer { KernelISA.force(nil) }
        KernelISA.force(isa)
        var rng = SplitMix(seed: 41)
        var values: [Float] = [0, -0, 1e-8, -1e-8, 65504, 65520, -65520, 1e6, .infinity, -.infinity]
        for _ in 0..<20_000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0xC7FF_FFFF)) }
        values = values.filter { !$0.isNaN }
        var out = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBytes { Ops.convertToHalf(v.baseAddress!, $0.baseAddress!, count: values.count) }
        }
        for (v, h) in zip(values, out) {
            #expect(h == Float16(v).bitPattern, "\(v)")
        }
    }
}

import Foundation
import GGUF
import Kernels
import LMCacheTestSupport
import Testing

/// Reference values from the `gguf` package, made once per test run by scripts/reference/dequant_reference.py.
struct DequantizationReference {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var type: GGMLType
        var raw: [UInt8]
        var expected: [Float]
        var description: String { name }
    }

    static let cases: [Case] = {
        do {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let dir = directory.url
            try runPython("scripts/reference/dequant_reference.py", [dir.path, try TestModel.requirePath()])
            let manifest = try String(contentsOf: dir.appendingPathComponent("manifest.tsv"), encoding: .utf8)
            return try manifest.split(separator: "\n").map { line in
                let fields = line.split(separator: "\t").map(String.init)
                let type = try #require(GGMLType.allCases.first { $0.description == fields[1] })
                let raw = [UInt8](try Data(contentsOf: dir.appendingPathComponent(fields[0] + ".raw")))
                let f32 = try Data(contentsOf: dir.appendingPathComponent(fields[0] + ".f32"))
                let expected = f32.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
                return Case(name: fields[0], type: type, raw: raw, expected: expected)
            }
        } catch {
            Issue.record("could not make dequantization references: \(error)")
            return []
        }
    }()
}

@Suite("Dequantization")
struct DequantizationTests {
    @Test("references cover every supported type, on random blocks and on the model's tensors")
    func coverage() {
        let cases = DequantizationReference.cases
        let randomTypes = Set(cases.filter { $0.name.hasPrefix("random-") }.map(\.type))
        #expect(randomTypes == Dequantization.supportedTypes)
        let modelTypes = Set(cases.filter { $0.name.hasPrefix("model-") }.map(\.type))
        #expect(modelTypes.isSuperset(of: [.f32, .q8_0, .q5_0, .q4_K, .q6_K]))
    }

    @Test("dequantize equals gguf.quants.dequantize", arguments: DequantizationReference.cases)
    func matchesReference(_ reference: DequantizationReference.Case) throws {
        let values = try Dequantization.dequantize(reference.type, bytes: reference.raw)
        try #require(values.count == reference.expected.count)
        var worst: Float = 0
        for (a, b) in zip(values, reference.expected) {
            // Same formula; only the order of two float multiplications may differ from numpy's.
            worst = max(worst, abs(a - b) / max(1e-6, abs(b)))
        }
        #expect(worst <= 1e-6, "\(reference.name): worst relative difference \(worst)")
    }

    @Test("unsupported types and partial blocks throw")
    func rejectsBadInput() {
        #expect(throws: KernelError.self) { try Dequantization.dequantize(.q2_K, bytes: [UInt8](repeating: 0, count: 84)) }
        #expect(throws: KernelError.self) { try Dequantization.dequantize(.q8_0, bytes: [UInt8](repeating: 0, count: 33)) }
    }
}

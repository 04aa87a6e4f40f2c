internal import CKernels

/// The instruction sets the quantized kernels can use, detected at run time (CPUID).
public enum KernelISA: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// Portable code (SSE2 on x86-64).
    case generic = 0
    /// AVX2 with FMA and F16C.
    case avx2 = 1
    /// AVX2 plus AVX-512 F/BW/VL/VNNI: batched quantized products in larger tiles, with the same results as ``avx2``.
    case avx512vnni = 2

    /// The best level this CPU supports.
    public static var best: KernelISA { KernelISA(rawValue: Int(lmc_cpu_isa())) ?? .generic }

    /// The level the kernels use now on this thread.
    public static var active: KernelISA { KernelISA(rawValue: Int(lmc_active_isa())) ?? .generic }

    /// Restricts the kernels called from the current thread to `level` (for tests and comparisons);
    /// `nil` restores automatic choice. A level above ``best`` is ignored. Work that the kernels hand to
    /// other threads is not affected.
    package static func force(_ level: KernelISA?) { lmc_force_isa(Int32(level?.rawValue ?? -1)) }

    public var description: String {
        switch self {
        case .generic: "generic"
        case .avx2: "avx2"
        case .avx512vnni: "avx512vnni"
        }
    }
}

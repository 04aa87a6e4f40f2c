public import GGUF

/// An error from a kernel: a tensor type it cannot handle or arguments that do not fit together.
public struct KernelError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case unsupportedType
        case invalidArgument
    }

    private let code: Code

    /// What went wrong, for people.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The tensor type has no kernel.
    public static func unsupportedType(_ type: GGMLType) -> KernelError {
        KernelError(.unsupportedType, "tensor type \(type) is not supported")
    }

    /// Arguments that do not fit together (sizes, block counts).
    public static func invalidArgument(_ message: String) -> KernelError {
        KernelError(.invalidArgument, message)
    }

    /// Whether this error reports an unsupported tensor type.
    public var isUnsupportedType: Bool { code == .unsupportedType }

    public var description: String { message }
}

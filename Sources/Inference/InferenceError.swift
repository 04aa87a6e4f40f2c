/// An error from the inference engine: a model file it cannot run, or input it cannot take.
public struct InferenceError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case unsupportedModel
        case missingTensor
        case invalidModel
        case invalidInput
        case invalidKV
        case stopped
    }

    private let code: Code

    /// What went wrong, for people.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The file's architecture or a tensor type has no implementation.
    public static func unsupportedModel(_ message: String) -> InferenceError { InferenceError(.unsupportedModel, message) }

    /// A tensor the architecture needs is absent.
    public static func missingTensor(_ name: String) -> InferenceError {
        InferenceError(.missingTensor, "model file has no tensor '\(name)'")
    }

    /// Hyperparameters or tensor shapes that do not fit together.
    public static func invalidModel(_ message: String) -> InferenceError { InferenceError(.invalidModel, message) }

    /// Token ids out of range, an empty prompt, a context that is full.
    public static func invalidInput(_ message: String) -> InferenceError { InferenceError(.invalidInput, message) }

    /// KV bytes or ranges that do not match the sequence's layout.
    public static func invalidKV(_ message: String) -> InferenceError { InferenceError(.invalidKV, message) }

    /// The engine was stopped (``GenerationEngine/cancelAll()``) and takes no more requests.
    public static func stopped(_ message: String) -> InferenceError { InferenceError(.stopped, message) }

    /// Whether this error says the engine was stopped, rather than what was asked of it is wrong.
    public var isStopped: Bool { code == .stopped }

    /// Whether this error is about the input (the caller's to fix), rather than the model or the
    /// engine's own state.
    public var isInvalidInput: Bool { code == .invalidInput }

    public var description: String { message }
}

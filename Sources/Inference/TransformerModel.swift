internal import LMCacheCore

/// A model built on the shared transformer machinery (``TransformerCore``): its file holds only what
/// differs between architectures (the weights' names and the ``TransformerSpec``); the passes are the
/// core's.
protocol TransformerModel: LanguageModel {
    var core: TransformerCore { get }
}

extension TransformerModel {
    public var configuration: ModelConfiguration { core.spec.configuration }

    public var kvLayout: KVLayout { core.kvLayout }

    public var attentionWindows: [Int] { core.spec.windows }

    public func forward(
        _ tokens: [Int32],
        sequence: SequenceKV,
        outputs: LogitOutputs,
        workspace: Workspace
    ) throws(InferenceError) -> [Float] {
        try core.forward(tokens, sequence: sequence, outputs: outputs, workspace: workspace)
    }

    public func forward(_ pieces: [ForwardPiece], workspace: Workspace) throws(InferenceError) -> [Float] {
        try core.forward(pieces, workspace: workspace)
    }

    public func decode(
        _ tokens: [Int32],
        sequences: [SequenceKV],
        workspace: Workspace
    ) throws(InferenceError) -> [Float] {
        try core.decode(tokens, sequences: sequences, workspace: workspace)
    }
}

extension Gemma3Model: TransformerModel {}
extension LlamaModel: TransformerModel {}

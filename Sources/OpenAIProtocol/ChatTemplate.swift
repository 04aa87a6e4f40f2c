/// Turns chat messages into the prompt text a model was trained on.
///
/// Gemma 3 (its model card's format): each turn is `<start_of_turn>ROLE\nTEXT<end_of_turn>\n` with
/// roles `user` and `model` (`assistant` is written `model`); a system message has no role of its own
/// and is put before the first user message, separated by a blank line; the prompt ends with
/// `<start_of_turn>model\n` for the reply. The tokenizer adds `<bos>`.
///
/// Other architectures get a plain `role: text` transcript ending with `assistant:`.
package struct ChatTemplate: Sendable, Hashable {
    /// The GGUF architecture (`gemma3`, …).
    package var architecture: String

    package init(architecture: String) { self.architecture = architecture }

    /// The prompt text for `messages`, ready to be tokenized with special tokens parsed.
    package func render(_ messages: [ChatMessage]) -> String {
        architecture == "gemma3" ? gemma3(messages) : plain(messages)
    }

    private func gemma3(_ messages: [ChatMessage]) -> String {
        var system: [String] = []
        var text = ""
        for message in messages {
            let content = message.content?.text ?? ""
            switch message.role {
            case "system", "developer":
                system.append(content)
            case "assistant", "model":
                text += "<start_of_turn>model\n\(content)<end_of_turn>\n"
            default:
                let prefix = system.isEmpty ? "" : system.joined(separator: "\n") + "\n\n"
                system = []
                text += "<start_of_turn>user\n\(prefix)\(content)<end_of_turn>\n"
            }
        }
        if !system.isEmpty {
            text += "<start_of_turn>user\n\(system.joined(separator: "\n"))<end_of_turn>\n"
        }
        return text + "<start_of_turn>model\n"
    }

    private func plain(_ messages: [ChatMessage]) -> String {
        messages.map { "\($0.role): \($0.content?.text ?? "")\n" }.joined() + "assistant:"
    }
}

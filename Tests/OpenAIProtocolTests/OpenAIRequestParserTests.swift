import Foundation
import OpenAIProtocol
import Testing

/// The request checks of `lmcache serve` without a server: what each body is answered, field by field.
/// (`OpenAIServerTests.ValidationTests` sends such bodies to a live server; the `openai-body` fuzz
/// target runs these functions on hostile bytes.)
@Suite("OpenAI request bodies")
struct OpenAIRequestParserTests {
    /// The error a body of `type` gets from the server's checks (`check`, then the parameters), or
    /// `nil` when it is accepted.
    static func error<Body: Decodable & GenerationFields>(
        _ json: String,
        as type: Body.Type,
        _ check: (Body) throws(APIError) -> Void
    ) -> APIError? {
        do throws(APIError) {
            let body = try OpenAIRequestParser.decode(type, from: Data(json.utf8))
            try check(body)
            _ = try OpenAIRequestParser.parameters(body, maxModelLength: 32_768)
            return nil
        } catch {
            return error
        }
    }

    static func chatError(_ json: String) -> APIError? {
        error(json, as: ChatCompletionRequest.self, OpenAIRequestParser.checkChat)
    }

    static func completionError(_ json: String) -> APIError? {
        error(json, as: CompletionRequest.self, OpenAIRequestParser.checkCompletion)
    }

    static let user = #""messages": [{"role": "user", "content": "Hi"}]"#

    @Test(
        "a bad chat body is a 400 that names its field",
        arguments: [
            (#"{"messages": [{"role": "alien", "content": "Hi"}]}"#, "messages[0].role", "not one of"),
            (#"{"messages": []}"#, "messages", "must not be empty"),
            (#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, "messages[0].content[0]", "text parts only"),
            ("{\(user), \"max_tokens\": 1e308}", "max_tokens", "between 1 and 32768"),
            ("{\(user), \"max_completion_tokens\": 0, \"max_tokens\": 5}", "max_completion_tokens", "between 1"),
            ("{\(user), \"seed\": -99999999999999999999}", "seed", "seed must be an integer"),
            ("{\(user), \"temperature\": 2.5}", "temperature", "between 0 and 2"),
            ("{\(user), \"top_p\": 0}", "top_p", "(0, 1]"),
            ("{\(user), \"top_k\": -2}", "top_k", "top_k must be"),
            ("{\(user), \"n\": 2}", "n", "only n = 1"),
            ("{\(user), \"logprobs\": true}", "logprobs", "log probabilities"),
            ("{\(user), \"top_logprobs\": 5}", "top_logprobs", "log probabilities"),
            ("{\(user), \"logit_bias\": {\"42\": 5}}", "logit_bias", "not supported"),
            ("{\(user), \"temperature\": \"hot\"}", "temperature", "must be a number"),
            (#"{"messages": "#, nil, "malformed JSON"),
            (#"[1, 2]"#, nil, "must be a JSON object"),
        ] as [(String, String?, String)]
    )
    func chatRefused(_ json: String, _ field: String?, _ words: String) throws {
        let error = try #require(Self.chatError(json), "accepted: \(json)")
        #expect(error.status == 400)
        #expect(error.param == field)
        #expect(error.message.contains(words), "\(error.message)")
    }

    @Test("a bad completions body is a 400 that names its field")
    func completionRefused() throws {
        let several = try #require(Self.completionError(#"{"prompt": ["a", "b"]}"#))
        #expect(several.param == "prompt")
        let logprobs = try #require(Self.completionError(#"{"prompt": "a", "logprobs": 5}"#))
        #expect(logprobs.param == "logprobs")
        let missing = try #require(Self.completionError(#"{"max_tokens": 3}"#))
        #expect(missing.param == "prompt" && missing.message == "prompt is required")
    }

    @Test("a valid body gives its parameters, neutral values and empty stop strings dropped")
    func accepted() throws {
        let json = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "#
            + #"[{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]}], "max_tokens": 9, "#
            + #""temperature": 0, "top_k": -1, "seed": -1, "stop": ["", "."], "logit_bias": {}, "cache_salt": "t"}"#
        let body = try OpenAIRequestParser.decode(ChatCompletionRequest.self, from: Data(json.utf8))
        try OpenAIRequestParser.checkChat(body)
        let parameters = try OpenAIRequestParser.parameters(body, maxModelLength: 32_768)
        #expect(parameters.lengthLimit == .init(field: "max_tokens", count: 9))
        #expect(parameters.temperature == 0 && parameters.topK == 0 && parameters.topP == 1)
        #expect(parameters.seed == UInt64.max)
        #expect(parameters.stop == ["."])
        #expect(parameters.cacheSalt == "t")
        #expect(
            ChatTemplate(architecture: "gemma3").render(body.messages)
                == "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"
        )
    }
}

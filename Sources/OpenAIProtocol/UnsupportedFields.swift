package import Foundation

/// Request fields of the OpenAI API that change what a model generates and that this server does not
/// implement. A request that sets one to anything but its neutral value is refused with a 400 naming
/// the field, as vLLM refuses what it cannot honour, rather than answered as if the field were absent.
///
/// ```swift
/// try UnsupportedFields.check(body)   // throws for {"logit_bias": {"42": 5}}, not for {"logit_bias": {}}
/// ```
package enum UnsupportedFields {
    /// A JSON value, as much of it as the rules look at.
    enum Value: Decodable, Sendable {
        case null, bool(Bool), number(Double), string(String), array([Value]), object([String: Value])

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let bool = try? container.decode(Bool.self) {
                self = .bool(bool)
            } else if let number = try? container.decode(Double.self) {
                self = .number(number)
            } else if let string = try? container.decode(String.self) {
                self = .string(string)
            } else if let array = try? container.decode([Value].self) {
                self = .array(array)
            } else {
                self = .object(try container.decode([String: Value].self))
            }
        }
    }

    /// A field and the values that ask for nothing (the API's defaults).
    private struct Rule: Sendable {
        var name: String
        var neutral: String
        var accepts: @Sendable (Value) -> Bool
    }

    private static func number(_ expected: Double) -> @Sendable (Value) -> Bool {
        { value in
            if case .number(let number) = value { number == expected } else { false }
        }
    }

    private static func empty(_ value: Value) -> Bool {
        switch value {
        case .object(let object): object.isEmpty
        case .array(let array): array.isEmpty
        default: false
        }
    }

    private static func string(_ expected: String) -> @Sendable (Value) -> Bool {
        { value in
            if case .string(let string) = value { string == expected } else { false }
        }
    }

    private static let rules: [Rule] = [
        Rule(name: "presence_penalty", neutral: "0", accepts: number(0)),
        Rule(name: "frequency_penalty", neutral: "0", accepts: number(0)),
        Rule(name: "repetition_penalty", neutral: "1", accepts: number(1)),
        Rule(name: "logit_bias", neutral: "{}", accepts: empty),
        Rule(name: "tools", neutral: "[]", accepts: empty),
        Rule(name: "functions", neutral: "[]", accepts: empty),
        Rule(name: "tool_choice", neutral: "\"none\"", accepts: string("none")),
        Rule(name: "function_call", neutral: "\"none\"", accepts: string("none")),
        Rule(
            name: "response_format",
            neutral: "{\"type\": \"text\"}",
            accepts: { value in
                if case .object(let object) = value, case .string("text") = object["type"] { true } else { false }
            }
        ),
        Rule(name: "best_of", neutral: "1", accepts: number(1)),
        Rule(
            name: "echo",
            neutral: "false",
            accepts: { value in
                if case .bool(false) = value { true } else { false }
            }
        ),
        Rule(name: "suffix", neutral: "\"\"", accepts: string("")),
    ]

    /// The rules' fields of a request body, and nothing else (the prompt is not decoded again).
    private struct Fields: Decodable {
        var values: [String: Value] = [:]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for rule in UnsupportedFields.rules {
                values[rule.name] = try container.decodeIfPresent(Value.self, forKey: Key(stringValue: rule.name))
            }
        }
    }

    /// Throws for the first unsupported field of the JSON object `body` that asks for something;
    /// absent and `null` fields pass.
    package static func check(_ body: Data) throws(APIError) {
        guard let object = try? JSONDecoder().decode(Fields.self, from: body).values else { return }
        for rule in rules {
            guard let value = object[rule.name] else { continue }
            if case .null = value { continue }
            guard !rule.accepts(value) else { continue }
            throw APIError(
                message: "\(rule.name) is not supported by this server (omit it, or send \(rule.neutral))",
                param: rule.name
            )
        }
    }
}

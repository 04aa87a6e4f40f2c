import ArgumentParser
import Foundation
import Inference
import LMCacheCommandSupport
import LMCacheConnector
import LMCacheCore
import LMCacheStorage
import Tokenizers

/// `lmcache bench blend`: non-prefix reuse (CacheBlend) against full prefill on a RAG workload.
struct BenchBlendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blend",
        abstract: "Time to first token and answer quality of CacheBlend against full prefill on a RAG workload.",
        discussion: """
            The benchmark writes --documents documents of about --document-tokens tokens of generated prose, \
            each holding one fact (a person's name and an access code), and stores each document's KV once, \
            in a prompt of its own. Each measured prompt then draws all documents in a shuffled order, \
            separated by blend_special_str, and asks for one fact. Every prompt is run three ways: full \
            prefill, CacheBlend (--ratio of the cached tokens recomputed after check layer --check-layer) \
            and naive reuse (cached KV re-rotated, nothing recomputed). Reported: mean time to first token \
            (lookup, load and prefill; full_s, blend_s, speedup = full_s / blend_s), the fraction of answers \
            holding the exact code (accuracy_*), the fraction of the first 16 greedy tokens equal to full \
            prefill's (agreement_*), and the mean KL divergence of the first token's distribution from full \
            prefill's (kl_*). --sweep adds one row per recompute ratio 0, 0.05, 0.15, 0.3, 1.0.
            """
    )

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Documents per prompt (at least 2).")
    var documents = 6

    @Option(help: "Approximate tokens per document.")
    var documentTokens = 512

    @Option(help: "Prompts to measure (each asks for another document's fact).")
    var prompts = 6

    @Option(help: "Fraction of the cached tokens recomputed (blend_recompute_ratios).")
    var ratio = 0.15

    @Option(help: "The layer at which deviations are measured (blend_check_layers).")
    var checkLayer = 1

    @Option(
        help: """
            Unrelated documents placed before each document in the prompt where its KV is first stored \
            (0: right after the instruction, so within the first sliding window).
            """
    )
    var storedAfter = 0

    @Option(help: "Output tokens compared with full prefill.")
    var outputTokens = 16

    @Flag(help: "Also run every prompt at recompute ratios 0, 0.05, 0.15, 0.3 and 1.0.")
    var sweep = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard documents >= 2 else { throw ValidationError("--documents must be at least 2") }
        guard documentTokens >= 64 else { throw ValidationError("--document-tokens must be at least 64") }
        guard prompts > 0 else { throw ValidationError("--prompts must be positive") }
        guard storedAfter >= 0 else { throw ValidationError("--stored-after must be ≥ 0") }
        guard ratio >= 0, ratio <= 1 else { throw ValidationError("--ratio must be in [0, 1]") }
        guard checkLayer >= 0 else { throw ValidationError("--check-layer must be ≥ 0") }
        guard outputTokens > 0 else { throw ValidationError("--output-tokens must be positive") }
    }

    func run() async throws {
        let (file, model, _) = try modelArguments.load()
        guard checkLayer < model.configuration.layers else {
            throw ValidationError("--check-layer must be below the model's \(model.configuration.layers) layers")
        }
        let tokenizer = try makeTokenizer(from: file)
        let workload = RAGWorkload(
            documents: documents,
            fillers: storedAfter,
            documentTokens: documentTokens,
            tokenizer: tokenizer
        )
        var configuration = LMCacheConfiguration()
        configuration.maxLocalCPUSize = 2
        configuration.saveUnfullChunk = true
        configuration.enableBlending = true
        let storage = try StorageManager(configuration: configuration, prefault: false)
        let prefix = KVConnector(storage: storage, model: model, name: "bench", configuration: configuration)
        let blender = BlendConnector(
            prefix: prefix,
            options: BlendOptions(
                configuration: configuration,
                tokenizer: tokenizer
            )
        )
        let runner = BlendRunner(model: model, tokenizer: tokenizer, blender: blender, outputTokens: outputTokens)

        // Each document's KV is computed once, in a prompt of its own, and stored with its position.
        for document in workload.documents {
            let prompt = workload.encode(workload.warmupText(document))
            let lookup = await blender.lookup(prompt)
            let session = InferenceSession(model: model)
            _ = try lookup.prefill(model: model, sequence: session.sequence, workspace: session.workspace)
            lookup.save(from: session.sequence)
        }

        var generator = SplitMix(seed: 7)
        let cases = (0..<prompts).map { index in
            let asked = index % workload.documents.count
            var order = Array(workload.documents.indices)
            order.shuffle(using: &generator)
            return (
                prompt: workload.encode(workload.questionText(order: order, asked: asked)),
                answer: workload.documents[asked].code
            )
        }
        let ratios = sweep ? [0, 0.05, 0.15, 0.3, 1.0] : []
        var full = Tally()
        var blend = Tally()
        var naive = Tally()
        var sweepTallies = [Tally](repeating: Tally(), count: ratios.count)
        var promptTokens: [Int] = []
        var reusedTokens: [Int] = []
        for (prompt, answer) in cases {
            promptTokens.append(prompt.count)
            let reference = try runner.full(prompt)
            full.add(reference, answer: answer, reference: reference)
            let blended = try await runner.blend(prompt, checkLayers: [checkLayer], ratio: ratio)
            blend.add(blended, answer: answer, reference: reference)
            reusedTokens.append(blended.reused)
            naive.add(try await runner.blend(prompt, checkLayers: [], ratio: 0), answer: answer, reference: reference)
            for (index, r) in ratios.enumerated() {
                sweepTallies[index].add(
                    try await runner.blend(prompt, checkLayers: [checkLayer], ratio: r),
                    answer: answer,
                    reference: reference
                )
            }
        }
        let fullSeconds = full.meanSeconds
        var report: [String: Any] = [
            "full_s": fullSeconds,
            "blend_s": blend.meanSeconds,
            "naive_s": naive.meanSeconds,
            "speedup": fullSeconds / blend.meanSeconds,
            "accuracy_full": full.accuracy,
            "accuracy_blend": blend.accuracy,
            "accuracy_naive": naive.accuracy,
            "agreement_blend": blend.agreement,
            "agreement_naive": naive.agreement,
            "kl_blend": blend.meanKL,
            "kl_naive": naive.meanKL,
            "ratio": ratio,
            "check_layer": checkLayer,
            "documents": documents,
            "prompts": prompts,
            "mean_prompt_tokens": Double(promptTokens.reduce(0, +)) / Double(promptTokens.count),
            "mean_reused_tokens": Double(reusedTokens.reduce(0, +)) / Double(reusedTokens.count),
            "threads": EngineThreads.count,
            "model": modelArguments.model,
        ]
        if sweep {
            report["sweep"] = zip(ratios, sweepTallies).map { r, tally in
                [
                    "ratio": r, "blend_s": tally.meanSeconds, "speedup": fullSeconds / tally.meanSeconds,
                    "accuracy": tally.accuracy, "agreement": tally.agreement, "kl": tally.meanKL,
                ] as [String: Any]
            }
        }
        if json {
            try printJSON(report)
        } else {
            print(
                String(
                    format:
                        "TTFT full %.3f s, blend %.3f s (%.2fx), naive %.3f s; accuracy full %.2f blend %.2f naive %.2f; "
                        + "agreement blend %.2f naive %.2f; KL blend %.4f naive %.4f",
                    fullSeconds,
                    blend.meanSeconds,
                    fullSeconds / blend.meanSeconds,
                    naive.meanSeconds,
                    full.accuracy,
                    blend.accuracy,
                    naive.accuracy,
                    blend.agreement,
                    naive.agreement,
                    blend.meanKL,
                    naive.meanKL
                )
            )
            for (r, tally) in zip(ratios, sweepTallies) {
                print(
                    String(
                        format: "ratio %.2f: TTFT %.3f s (%.2fx), accuracy %.2f, agreement %.2f, KL %.4f",
                        r,
                        tally.meanSeconds,
                        fullSeconds / tally.meanSeconds,
                        tally.accuracy,
                        tally.agreement,
                        tally.meanKL
                    )
                )
            }
        }
    }
}

/// One run of one prompt: time to first token, the first token's logits and the greedy output.
struct BlendRun {
    var seconds: Double
    var logits: [Float]
    var tokens: [Int32]
    var text: String
    var reused: Int
}

/// Runs prompts by full prefill or through the blender, never storing anything.
struct BlendRunner {
    let model: any LanguageModel
    let tokenizer: any Tokenizer
    let blender: BlendConnector
    let outputTokens: Int

    func full(_ prompt: [Int32]) throws -> BlendRun {
        let session = InferenceSession(model: model)
        let start = monotonicSeconds()
        let logits = try session.prefill(prompt)
        let first = Sampler.argmax(logits)
        let seconds = monotonicSeconds() - start
        return try finish(session, logits: logits, first: first, seconds: seconds, reused: 0)
    }

    func blend(_ prompt: [Int32], checkLayers: [Int], ratio: Double) async throws -> BlendRun {
        let session = InferenceSession(model: model)
        let start = monotonicSeconds()
        let lookup = await blender.lookup(prompt)
        let (logits, reused) = try blender.prefill(
            lookup,
            model: model,
            sequence: session.sequence,
            workspace: session.workspace,
            checkLayers: checkLayers,
            ratios: [ratio]
        )
        let first = Sampler.argmax(logits)
        let seconds = monotonicSeconds() - start
        return try finish(session, logits: logits, first: first, seconds: seconds, reused: reused)
    }

    private func finish(
        _ session: InferenceSession,
        logits: [Float],
        first: Int32,
        seconds: Double,
        reused: Int
    ) throws
        -> BlendRun
    {
        var tokens = [first]
        var next = first
        while tokens.count < outputTokens {
            let step = try model.forward(
                [next],
                sequence: session.sequence,
                outputs: .last,
                workspace: session.workspace
            )
            next = Sampler.argmax(step)
            tokens.append(next)
        }
        return BlendRun(
            seconds: seconds,
            logits: logits,
            tokens: tokens,
            text: tokenizer.decode(tokens),
            reused: reused
        )
    }
}

/// Sums of one way of running the prompts.
struct Tally {
    private var seconds: [Double] = []
    private var correct = 0
    private var agreeing = 0
    private var compared = 0
    private var kl: [Double] = []

    mutating func add(_ run: BlendRun, answer: String, reference: BlendRun) {
        seconds.append(run.seconds)
        if run.text.contains(answer) { correct += 1 }
        for (a, b) in zip(run.tokens, reference.tokens) where a == b { agreeing += 1 }
        compared += reference.tokens.count
        kl.append(Self.divergence(reference.logits, run.logits))
    }

    var meanSeconds: Double { seconds.reduce(0, +) / Double(max(1, seconds.count)) }
    var accuracy: Double { Double(correct) / Double(max(1, seconds.count)) }
    var agreement: Double { Double(agreeing) / Double(max(1, compared)) }
    var meanKL: Double { kl.reduce(0, +) / Double(max(1, kl.count)) }

    /// KL(p‖q) of the softmax distributions of two logit vectors, in nats.
    static func divergence(_ p: [Float], _ q: [Float]) -> Double {
        func logSoftmax(_ x: [Float]) -> [Double] {
            let m = Double(x.max() ?? 0)
            let sum = x.reduce(0.0) { $0 + exp(Double($1) - m) }
            let log = m + Foundation.log(sum)
            return x.map { Double($0) - log }
        }
        let lp = logSoftmax(p)
        let lq = logSoftmax(q)
        return zip(lp, lq).reduce(0.0) { $0 + exp($1.0) * ($1.0 - $1.1) }
    }
}

/// Generated documents, each holding one fact, and the prompts built from them.
struct RAGWorkload {
    struct Document {
        var name: String
        var code: String
        var text: String
    }

    let tokenizer: any Tokenizer
    let separator = LMCacheConfiguration().blendSpecialString
    private(set) var documents: [Document] = []
    /// Documents that precede each document where it is first stored (`--stored-after`), never asked about.
    private(set) var fillers: [Document] = []

    private static let names = [
        "Marta Okafor", "Julien Brandt", "Ines Halvorsen", "Tomasz Ricci", "Priya Lindqvist", "Oscar Nakamura",
        "Leila Fontaine", "Hugo Castellano", "Nadia Petrov", "Felix Adeyemi", "Clara Sorensen", "Mateo Kowalski",
    ]
    private static let places = [
        "the harbour district", "the old mill", "the northern valley", "the river delta", "the hill observatory",
        "the city archive", "the glass market", "the eastern railway", "the salt flats", "the pine forest",
    ]
    private static let subjects = [
        "The committee", "A local historian", "The survey team", "An early visitor", "The regional council",
        "A travelling engineer", "The night watch", "A group of students", "The harbour master", "The village choir",
    ]
    private static let verbs = [
        "described", "measured", "recorded", "visited", "restored", "photographed", "mapped", "studied", "praised",
        "inspected",
    ]
    private static let objects = [
        "the stone bridge", "the weather station", "the long warehouse", "the clock tower", "the water gardens",
        "the printing house", "the lighthouse", "the market hall", "the winter road", "the copper mine",
    ]
    private static let endings = [
        "after a difficult winter", "with great care", "before the spring floods", "during the harvest festival",
        "for the first time in decades", "with help from the neighbours", "despite the heavy rain",
        "at the request of the mayor", "over several long weeks", "without any public notice",
    ]

    init(documents count: Int, fillers: Int, documentTokens: Int, tokenizer: any Tokenizer) {
        self.tokenizer = tokenizer
        var generator = SplitMix(seed: 2025)
        for index in 0..<(count + fillers) {
            let name =
                Self.names[index % Self.names.count]
                + (index < Self.names.count ? "" : " \(index / Self.names.count + 1)")
            let code =
                "\(["K", "R", "T", "M", "P", "V"][index % 6])\(100 + (index * 337) % 900)-\(1000 + (index * 7919) % 9000)"
            let place = Self.places[index % Self.places.count]
            let fact = " The access code of \(name) is \(code)."
            var before = "This report concerns \(place)."
            var after = ""
            while tokenizer.encode(before + fact + after, addSpecial: false, parseSpecial: false).count < documentTokens
            {
                let sentence =
                    " \(Self.pick(Self.subjects, &generator)) \(Self.pick(Self.verbs, &generator)) "
                    + "\(Self.pick(Self.objects, &generator)) near \(place) \(Self.pick(Self.endings, &generator))."
                if before.count <= after.count { before += sentence } else { after += sentence }
            }
            let document = Document(name: name, code: code, text: before + fact + after)
            if index < count { documents.append(document) } else { self.fillers.append(document) }
        }
    }

    private static func pick(_ list: [String], _ generator: inout SplitMix) -> String {
        list[Int(generator.next() % UInt64(list.count))]
    }

    private let instruction = "Use the documents below to answer the question."

    func encode(_ text: String) -> [Int32] { tokenizer.encode(text, addSpecial: true, parseSpecial: true) }

    /// A prompt holding only `document`, in which its KV is first computed and stored.
    func warmupText(_ document: Document) -> String {
        "<start_of_turn>user\n" + instruction + fillers.map { separator + $0.text }.joined() + separator
            + document.text + separator
    }

    /// Every document in `order`, then a question about document `asked`.
    func questionText(order: [Int], asked: Int) -> String {
        "<start_of_turn>user\n" + instruction + order.map { separator + documents[$0].text }.joined() + separator
            + "Question: what is the access code of \(documents[asked].name)?<end_of_turn>\n<start_of_turn>model\n"
            + "The access code of \(documents[asked].name) is"
    }
}

/// A small deterministic generator (SplitMix64), so every run builds the same workload.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

import Foundation
import GGUF
import LMCacheCore
import LMCacheRemote
import LMCacheStorage
import LMCacheWire
import NIOCore
import OpenAIProtocol

/// The decoders that take bytes from outside, each as a fuzz target: it feeds one input to the
/// decoder and lets it accept or refuse it. A crash, a trap (an overflow, an out-of-range index, a
/// failed precondition) or, under the address sanitizer, a memory error is a bug; a thrown error
/// or a `nil` is the decoder doing its job.
enum FuzzTarget: String, CaseIterable {
    /// `lm://` requests as `lmcache_server` reads them from a socket.
    case lmRequest = "lm-request"
    /// RESP replies as the Redis tier reads them from a (possibly hostile) Redis.
    case resp
    /// P2P controller messages, both directions.
    case controller
    /// Our chunk frame in an `lm://` or Redis value.
    case kvFrame = "kv-frame"
    /// The KV codecs' streams (lossless, q8, cachegen), decoded by the C decoders.
    case kvCodec = "kv-codec"
    /// A disk record file (a KV chunk's header, or a whole value of the `lm://` server).
    case diskChunk = "disk-chunk"
    /// A GGUF file's header (metadata and tensor table).
    case gguf
    /// A configuration file (`LMCACHE_CONFIG_FILE`).
    case config
    /// An OpenAI request body, as `lmcache serve` checks it for completions and for chat.
    case openaiBody = "openai-body"

    /// Runs the target's decoder on `data`.
    func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .lmRequest:
            var buffer = ByteBuffer(bytes: data)
            let decoder = LMRequestDecoder(maximumPayloadBytes: 1 << 20)
            while let request = try? decoder.decode(buffer: &buffer) { _ = request.payload.readableBytes }
        case .resp:
            var buffer = ByteBuffer(bytes: data)
            var decoder = RESPValueDecoder(maximumBulkBytes: 1 << 20, maximumArrayCount: 4096)
            while let value = try? decoder.decode(buffer: &buffer) { _ = value.errorMessage }
        case .controller:
            var buffer = ByteBuffer(bytes: data)
            while let message = try? ControllerMessage.read(from: &buffer, maximumLength: 1 << 20) {
                _ = message.encoded()
            }
        case .kvFrame:
            // The key the frame itself names, so that decoding gets past the key check.
            guard data.count >= ChunkFormat.fixedSize else { return }
            let hash = ChunkHash(
                low: data.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian,
                high: data.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian
            )
            let tokens = Int(data.loadUnaligned(fromByteOffset: 56, as: UInt32.self).littleEndian)
            for dtype in [KVDType.float16, .bfloat16, .float32] {
                let key = CacheKey(hash: hash, tokenCount: tokens, modelName: "fuzz", dtype: dtype)
                _ = KVChunkFrame.decode(data, key: key, owner: FuzzOwner())
            }
        case .kvCodec:
            // Four bytes choose the codec and a small layout; the rest is the stream.
            guard data.count >= 4 else { return }
            let codecs = KVSerde.allCases.map(KVCodec.id).filter { $0 != 0 }
            let codec = codecs[Int(data[0]) % codecs.count]
            let layout = KVLayout(layers: 1 + Int(data[1] % 4), kvHeads: 1 + Int(data[3] % 2),
                headDim: 8 << Int(data[3] >> 4 % 4), dtype: .float16)
            let tokens = 1 + Int(data[2] % 64)
            let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.byteCount(tokens: tokens), alignment: 64)
            defer { destination.deallocate() }
            _ = KVCodec.decode(UnsafeRawBufferPointer(rebasing: data[4...]), codec: codec, layout: layout,
                tokens: tokens, into: destination)
        case .diskChunk:
            _ = ChunkFormat.parseHeader(data, recordSize: data.count, alignment: ChunkFormat.diskAlignment)
        case .gguf:
            _ = try? GGUFFile.checkHeader(data)
        case .config:
            _ = try? ConfigurationLoader.load(fileContents: Data(data), named: "fuzz.yaml")
        case .openaiBody:
            let body = Data(data)
            func expectClientError(_ check: () throws(APIError) -> Void) {
                do {
                    try check()
                } catch {
                    // A body is the client's: anything it can say is a 4xx, never a server error.
                    precondition((400..<500).contains(error.status), "status \(error.status) for a request body")
                }
            }
            expectClientError { () throws(APIError) in
                let request = try OpenAIRequestParser.decode(CompletionRequest.self, from: body)
                try OpenAIRequestParser.checkCompletion(request)
                _ = try OpenAIRequestParser.parameters(request, maxModelLength: 32_768)
            }
            expectClientError { () throws(APIError) in
                let request = try OpenAIRequestParser.decode(ChatCompletionRequest.self, from: body)
                try OpenAIRequestParser.checkChat(request)
                _ = try OpenAIRequestParser.parameters(request, maxModelLength: 32_768)
                for architecture in ["gemma3", "llama"] {
                    _ = ChatTemplate(architecture: architecture).render(request.messages)
                }
            }
        }
    }

    /// Valid inputs to start from: what our own encoders write.
    var seeds: [[UInt8]] {
        switch self {
        case .lmRequest:
            let put = LMRequest(header: LMRequestHeader(command: .put, key: "m@1@0@ab@half", length: 5,
                format: 4, dtype: 6, shape: LMShape([5, 0, 0, 0])), payload: ByteBuffer(string: "hello"))
            return [put, LMRequest(header: LMRequestHeader(command: .get, key: "m@1@0@ab@half")),
                LMRequest(header: LMRequestHeader(command: .exist, key: "m@1@0@ab@half")),
                LMRequest(header: LMRequestHeader(command: .health, key: "health"))]
                .map { Array(buffer: LMRequestEncoder.encode($0)) }
        case .resp:
            return ["+OK\r\n", "-MOVED 3999 127.0.0.1:6381\r\n", ":42\r\n", "$5\r\nhello\r\n", "$-1\r\n",
                "*3\r\n$3\r\nfoo\r\n*1\r\n:1\r\n$-1\r\n",
                "*1\r\n*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"].map { Array($0.utf8) }
        case .controller:
            let key = ControllerChunkKey(low: 1, high: 2, tokenCount: 256)
            let messages: [ControllerMessage] = [
                .register(instanceID: "a", host: "127.0.0.1", port: 9000),
                .report(instanceID: "a", admitted: [key], removed: []), .lookup(instanceID: "b", keys: [key, key]),
                .peer(instanceID: "a", host: "127.0.0.1", port: 9000, count: 2), .failure("no"), .ok,
            ]
            return messages.map { Array(buffer: $0.encoded()) }
        case .kvFrame:
            let layout = KVLayout(layers: 2, kvHeads: 1, headDim: 16, dtype: .float16)
            return KVSerde.allCases.map {
                Array(buffer: KVChunkFrame.encode(SyntheticChunks.chunk(1, tokens: 8, layout: layout), serde: $0))
            }
        case .kvCodec:
            // Codec index, layers - 1, tokens - 1, head size: layouts the `run` mapping gives back.
            let layout = KVLayout(layers: 2, kvHeads: 1, headDim: 16, dtype: .float16)
            let chunk = SyntheticChunks.chunk(2, tokens: 8, layout: layout)
            let codecs = KVSerde.allCases.map(KVCodec.id).filter { $0 != 0 }
            return codecs.enumerated().compactMap { index, codec in
                chunk.withUnsafeBytes { KVCodec.encode($0, codec: codec, layout: layout, tokens: 8) }
                    .map { [UInt8(index), 1, 7, 0x10] + $0 }
            }
        case .diskChunk:
            let chunk = SyntheticChunks.chunk(3, tokens: 16, layout: KVLayout(layers: 2, kvHeads: 1, headDim: 8, dtype: .float32))
            // A chunk's header, and a whole value record of the `lm://` server.
            let value = ChunkFormat.Content.value(ChunkFormat.ValueDescription(key: "m@1@0@ab@half", format: 4, dtype: 6, shape: [5, 0, 0, 0]))
            let payload: [UInt8] = Array("hello".utf8)
            var record = [UInt8](repeating: 0, count: ChunkFormat.headerLength(of: value, alignment: ChunkFormat.diskAlignment))
            record.withUnsafeMutableBytes { header in
                payload.withUnsafeBytes {
                    ChunkFormat.writeHeader(hash: ChunkHash(low: 1, high: 2), content: value, payloadLength: $0.count,
                        payloadChecksum: ChunkChecksum.payload($0), into: header)
                }
            }
            return [ChunkFormat.headerBytes(of: chunk), record + payload]
        case .gguf:
            return [Self.tinyGGUF]
        case .config:
            return ["chunk_size: 256\nlocal_cpu: true\nmax_local_cpu_size: 2.5\nremote_url: lm://localhost:65432\n"
                + "remote_serde: cachegen\nblend_recompute_ratios: [0.15, 0.3]\nextra_config: {use_odirect: true}\n"]
                .map { Array($0.utf8) }
        case .openaiBody:
            return [
                #"{"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "stream": true, "#
                    + #""stream_options": {"include_usage": true}, "stop": ["\n", "."], "seed": -7, "cache_salt": "t"}"#,
                #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "#
                    + #"[{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "Hello"}], "#
                    + #""max_completion_tokens": 8, "top_p": 0.9, "top_k": 40, "n": 1, "logprobs": false, "#
                    + #""top_logprobs": 0, "logit_bias": {}, "presence_penalty": 0}"#,
            ].map { Array($0.utf8) }
        }
    }

    /// A minimal GGUF v3 file: two metadata entries and one 4-element F32 tensor.
    static var tinyGGUF: [UInt8] {
        var bytes: [UInt8] = Array("GGUF".utf8)
        func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func string(_ text: String) {
            u64(UInt64(text.utf8.count))
            bytes += Array(text.utf8)
        }
        u32(3)  // version
        u64(1)  // tensors
        u64(2)  // metadata entries
        string("general.architecture")
        u32(8)  // string
        string("llama")
        string("general.alignment")
        u32(4)  // uint32
        u32(32)
        string("t")
        u32(1)  // dimensions
        u64(4)
        u32(0)  // F32
        u64(0)  // offset in the data section
        while bytes.count % 32 != 0 { bytes.append(0) }
        for value: Float in [1, 2, 3, 4] { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 } }
        return bytes
    }
}

/// Keeps nothing alive: the fuzz input outlives every decode of it.
private final class FuzzOwner: Sendable {}

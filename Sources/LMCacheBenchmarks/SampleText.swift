import Foundation

/// Real English text for benchmark prompts: the license texts every Debian system ships in
/// `/usr/share/common-licenses` (package `base-files`, which is essential), read in name order
/// without the symbolic links; where that folder is missing, generated prose instead.
///
/// The same machine always yields the same text, so prompts are identical across runs.
enum SampleText {
    static let directory = "/usr/share/common-licenses"

    /// At least `characters` characters of text (the licenses repeated, or prose, as needed).
    static func text(characters: Int) -> String {
        let base = licenses() ?? prose(characters: characters)
        var text = base
        var part = 2
        while text.count < characters {
            text += "\n\nPart \(part).\n\n" + base
            part += 1
        }
        return text
    }

    private static func licenses() -> String? {
        let manager = FileManager.default
        guard let names = try? manager.contentsOfDirectory(atPath: directory) else { return nil }
        var texts: [String] = []
        for name in names.sorted() {
            let path = directory + "/" + name
            if (try? manager.destinationOfSymbolicLink(atPath: path)) != nil { continue }
            if let text = try? String(contentsOfFile: path, encoding: .utf8) { texts.append(text) }
        }
        return texts.isEmpty ? nil : texts.joined(separator: "\n\n")
    }

    /// Deterministic prose from a small grammar, for systems without the license texts.
    private static func prose(characters: Int) -> String {
        let subjects = [
            "The harbour master", "A visiting engineer", "The council", "Every apprentice", "The archivist",
        ]
        let verbs = ["recorded", "inspected", "repaired", "described", "measured"]
        let objects = ["the northern lighthouse", "a flooded orchard", "the old stone bridge", "the market ledgers"]
        let tails = ["before the winter storms.", "while the tide was low.", "for the annual report.", "at dawn."]
        var state: UInt64 = 0x2545_f491_4f6c_dd1d
        func pick(_ words: [String]) -> String {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return words[Int(state >> 33) % words.count]
        }
        var text = ""
        while text.count < characters {
            text += "\(pick(subjects)) \(pick(verbs)) \(pick(objects)) \(pick(tails)) "
        }
        return text
    }
}

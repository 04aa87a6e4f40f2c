import Foundation
import Testing

/// Network namespaces joined by a bridge: distinct network hosts on one machine (root only).
/// Everything created is deleted by ``remove()``, which the test calls also on failure.
final class Netns: @unchecked Sendable {
    let names: [String]
    let bridge: String
    let vethHost: [String]
    /// `10.a.b.0/24`: the bridge is `.1`, namespace `i` is `.(i + 2)`.
    let prefix: String

    /// The `ip` tool (iproute2).
    static func ipTool() throws -> String {
        for path in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw ClusterFailure("the ip tool (Debian package iproute2) is not installed: scripts/install-deps installs it")
    }

    /// Runs `ip arguments…`; throws with its output when it fails.
    @discardableResult
    static func ip(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(filePath: try ipTool())
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ClusterFailure("ip \(arguments.joined(separator: " ")) failed: \(output)")
        }
        return output
    }

    /// Creates `count` namespaces on a new bridge, each with a veth pair and an address.
    init(count: Int) throws {
        let tag = String(UInt32.random(in: 0..<0xFFFFF), radix: 16)
        names = (0..<count).map { "lmp2p-\(tag)-\($0)" }
        bridge = "lmp2pb\(tag)"
        vethHost = (0..<count).map { "lmp2p\(tag)h\($0)" }
        prefix = "10.\(200 + Int.random(in: 0..<50)).\(Int.random(in: 1..<250))"
        do {
            try Self.ip(["link", "add", bridge, "type", "bridge"])
            try Self.ip(["addr", "add", "\(prefix).1/24", "dev", bridge])
            try Self.ip(["link", "set", bridge, "up"])
            for (i, name) in names.enumerated() {
                let inner = "lmp2p\(tag)n\(i)"
                try Self.ip(["netns", "add", name])
                try Self.ip(["link", "add", vethHost[i], "type", "veth", "peer", "name", inner])
                try Self.ip(["link", "set", inner, "netns", name])
                try Self.ip(["link", "set", vethHost[i], "master", bridge])
                try Self.ip(["link", "set", vethHost[i], "up"])
                try Self.ip(["-n", name, "addr", "add", "\(address(i))/24", "dev", inner])
                try Self.ip(["-n", name, "link", "set", inner, "up"])
                try Self.ip(["-n", name, "link", "set", "lo", "up"])
            }
        } catch {
            remove()
            throw error
        }
    }

    /// The address of namespace `i`.
    func address(_ i: Int) -> String { "\(prefix).\(i + 2)" }
    /// The bridge's address (the root namespace's side).
    var bridgeAddress: String { "\(prefix).1" }

    /// Brings namespace `i`'s link up or down (its host-side veth end).
    func setLink(_ i: Int, up: Bool) throws {
        try Self.ip(["link", "set", vethHost[i], up ? "up" : "down"])
    }

    /// Deletes the namespaces (their veth pairs go with them) and the bridge; ignores what is gone.
    func remove() {
        for name in names { _ = try? Self.ip(["netns", "delete", name]) }
        for veth in vethHost { _ = try? Self.ip(["link", "delete", veth]) }
        _ = try? Self.ip(["link", "delete", bridge])
    }
}

/// The instances on distinct network hosts: three namespaces on a bridge, the controller on the
/// bridge's address. Sharing works across hosts, and cutting one host's link is survived.
@Suite(.serialized)
struct P2PNamespaceTests {
    @Test("instances in separate network namespaces share chunks, and one host losing its link is survived")
    func namespaces() async throws {
        // Fails (never skips) where namespaces cannot be made: the test needs root and iproute2.
        let network = try Netns(count: 3)
        defer { network.remove() }
        let cluster = try P2PCluster()
        var failed = true
        defer { cluster.stop(failed: failed) }

        let controllerPort = try freePort()
        try cluster.startController(host: network.bridgeAddress, port: controllerPort)
        for (i, name) in ["a", "b", "c"].enumerated() {
            try cluster.startInstance(
                name,
                host: network.address(i),
                port: 8000,
                p2pHost: network.address(i),
                controller: "\(network.bridgeAddress):\(controllerPort)",
                netns: network.names[i]
            )
        }
        try await cluster.waitUntilHealthy()
        try await cluster.waitForRegistrations(3)

        // Across hosts: computed on A, found on B.
        let document = p2pDocument(seed: 11)
        let cold = try await cluster.complete("a", prompt: document)
        try await Task.sleep(for: .seconds(1))
        let onB = try await cluster.complete("b", prompt: document)
        #expect(onB.cached >= 512, "B found \(onB.cached) cached tokens")
        #expect(onB.text == cold.text)

        // A document only A holds, then A's link goes down: its packets vanish (no refusal), so
        // C's fetch from A stalls until the timeout, misses, and C computes correctly.
        let stranded = p2pDocument(seed: 12)
        let strandedCold = try await cluster.complete("a", prompt: stranded)
        try await Task.sleep(for: .seconds(1))
        try network.setLink(0, up: false)
        let onC = try await cluster.complete("c", prompt: stranded)
        #expect(onC.text == strandedCold.text)
        #expect(onC.cached == 0)

        // B still shares with C while A is cut off: B gets the stranded document from C.
        try await Task.sleep(for: .seconds(1))
        let onBAgain = try await cluster.complete("b", prompt: stranded)
        #expect(onBAgain.cached >= 512, "B found \(onBAgain.cached) cached tokens")
        #expect(onBAgain.text == strandedCold.text)

        // The controller drops A for missed heartbeats; when A's link comes back, A registers
        // again and answers as before.
        try await cluster.waitForControllerLog("instance missed its heartbeats")
        let before = cluster.registrations()
        try network.setLink(0, up: true)
        try await cluster.waitForRegistrations(before + 1)
        let backOnA = try await cluster.complete("a", prompt: document)
        #expect(backOnA.text == cold.text)
        failed = false
    }
}

import Foundation
import Testing

/// Three real `lmcache serve` instances and one `lmcache controller` on loopback: a document
/// computed on one instance is a P2P hit on the others with the cold output; a killed peer and a
/// restarted controller cost misses at most, never errors, hangs or wrong output.
@Suite(.serialized)
struct P2PProcessTests {
    @Test("a document sent to A is a P2P hit on B and C; killing A and restarting the controller are survived")
    func threeInstances() async throws {
        let cluster = try P2PCluster()
        var failed = true
        defer { cluster.stop(failed: failed) }
        let controllerPort = try freePort()
        let controller = "127.0.0.1:\(controllerPort)"
        try cluster.startController(host: "127.0.0.1", port: controllerPort)
        for name in ["a", "b", "c"] {
            try cluster.startInstance(
                name,
                host: "127.0.0.1",
                port: try freePort(),
                p2pHost: "127.0.0.1",
                controller: controller
            )
        }
        try await cluster.waitUntilHealthy()
        try await cluster.waitForRegistrations(3)

        // Computed on A (cold), then found on B and on C through the controller.
        let document = p2pDocument(seed: 1)
        let cold = try await cluster.complete("a", prompt: document)
        #expect(cold.cached == 0)
        try await Task.sleep(for: .seconds(1))  // A reports its chunks within 100 ms.
        let onB = try await cluster.complete("b", prompt: document)
        #expect(onB.cached >= 512, "B found \(onB.cached) cached tokens")
        #expect(onB.text == cold.text)
        let onC = try await cluster.complete("c", prompt: document)
        #expect(onC.cached >= 512, "C found \(onC.cached) cached tokens")
        #expect(onC.text == cold.text)

        // A second document only A holds; A is killed before anyone asks. The controller still
        // lists A (until its heartbeats are missed): B's fetch fails, B computes, correctly.
        let orphan = p2pDocument(seed: 2)
        let orphanCold = try await cluster.complete("a", prompt: orphan)
        try await Task.sleep(for: .seconds(1))
        cluster.kill("a")
        let start = ContinuousClock.now
        let computed = try await cluster.complete("b", prompt: orphan)
        #expect(computed.text == orphanCold.text)
        // Nothing of the document: at most the text every prompt begins with, from B's own earlier requests.
        #expect(computed.cached < 64)
        let recomputeTime = ContinuousClock.now - start
        // B now holds it: C gets it from B.
        try await Task.sleep(for: .seconds(1))
        let fromB = try await cluster.complete("c", prompt: orphan)
        #expect(fromB.cached >= 512)
        #expect(fromB.text == orphanCold.text)

        // The controller restarts with an empty map. A document B computed before the restart is
        // found on C afterwards: B registered again and re-reported what it holds.
        let kept = p2pDocument(seed: 3)
        let keptCold = try await cluster.complete("b", prompt: kept)
        try await Task.sleep(for: .seconds(1))
        cluster.killController()
        try cluster.startController(host: "127.0.0.1", port: controllerPort)
        try await cluster.waitForRegistrations(2)
        try await Task.sleep(for: .milliseconds(500))  // the re-report follows each registration
        let afterRestart = try await cluster.complete("c", prompt: kept)
        #expect(afterRestart.cached >= 512, "C found \(afterRestart.cached) cached tokens after the restart")
        #expect(afterRestart.text == keptCold.text)
        print("P2P: recomputing with a dead peer listed took \(recomputeTime)")
        failed = false
    }
}

import LMCacheServer
import LMCacheWire
import Testing

/// The controller's map alone, driven with explicit times.
struct ControllerRegistryTests {
    static let keys = (0..<6).map { ControllerChunkKey(low: UInt64($0 + 1), high: 7, tokenCount: 256) }
    let t0 = ContinuousClock.now

    func registry() -> ControllerRegistry {
        var registry = ControllerRegistry(heartbeatTimeout: .seconds(3))
        registry.register("a", host: "10.0.0.2", port: 8200, now: t0)
        registry.register("b", host: "10.0.0.3", port: 8201, now: t0)
        registry.register("c", host: "10.0.0.4", port: 8202, now: t0)
        return registry
    }

    @Test("a lookup answers the peer with the longest leading run, never the asker")
    func longestRun() {
        var registry = registry()
        let reported = [
            registry.report("a", admitted: Array(Self.keys[0..<2]), removed: [], now: t0),
            registry.report("b", admitted: Array(Self.keys[0..<4]), removed: [], now: t0),
            registry.report("c", admitted: Array(Self.keys[1..<6]), removed: [], now: t0),
        ]
        #expect(reported == [true, true, true])
        let answer = registry.lookup(Self.keys, excluding: "c", now: t0)
        #expect(answer == .init(instanceID: "b", host: "10.0.0.3", port: 8201, count: 4))
        // B asking: A holds two; C holds none from the start.
        #expect(registry.lookup(Self.keys, excluding: "b", now: t0)?.instanceID == "a")
        #expect(registry.lookup(Self.keys, excluding: "b", now: t0)?.count == 2)
        // Nobody else holds the first key.
        #expect(registry.lookup(Array(Self.keys[5...]), excluding: "c", now: t0) == nil)
    }

    @Test("removed and forgotten keys shorten runs; a gap ends a run")
    func removals() {
        var registry = registry()
        _ = registry.report("a", admitted: Self.keys, removed: [], now: t0)
        _ = registry.report("a", admitted: [], removed: [Self.keys[3]], now: t0)
        #expect(registry.lookup(Self.keys, excluding: "b", now: t0)?.count == 3)
        registry.forget([Self.keys[0]], heldBy: "a")
        #expect(registry.lookup(Self.keys, excluding: "b", now: t0) == nil)
        #expect(registry.entryCount == 4)
    }

    @Test("an instance not heard from within the timeout is not answered, then dropped")
    func heartbeats() {
        var registry = registry()
        _ = registry.report("a", admitted: Self.keys, removed: [], now: t0)
        _ = registry.report("b", admitted: Self.keys, removed: [], now: t0)
        let alive = registry.heartbeat("a", now: t0 + .seconds(2))
        #expect(alive)
        // At 4 s, B (last heard at 0) is silent too long; A (at 2) is alive.
        let later = t0 + .seconds(4)
        #expect(registry.lookup(Self.keys, excluding: "c", now: later)?.instanceID == "a")
        let dropped = registry.expire(now: later)
        #expect(dropped == ["b", "c"])
        #expect(registry.instances.keys.sorted() == ["a"])
        let answers = [
            registry.heartbeat("b", now: later), registry.report("b", admitted: Self.keys, removed: [], now: later),
        ]
        #expect(answers == [false, false])
    }

    @Test("registering again forgets what the instance held; port 0 is never an answer")
    func reregister() {
        var registry = registry()
        _ = registry.report("a", admitted: Self.keys, removed: [], now: t0)
        registry.register("a", host: "10.0.0.9", port: 8300, now: t0)
        #expect(registry.lookup(Self.keys, excluding: "b", now: t0) == nil)
        registry.register("d", host: "10.0.0.5", port: 0, now: t0)
        _ = registry.report("d", admitted: Self.keys, removed: [], now: t0)
        #expect(registry.lookup(Self.keys, excluding: "b", now: t0) == nil)
        registry.drop("d")
        #expect(registry.entryCount == 0)
    }

    @Test("ties go to the instance heard from most recently")
    func ties() {
        var registry = registry()
        _ = registry.report("a", admitted: Self.keys, removed: [], now: t0)
        _ = registry.report("b", admitted: Self.keys, removed: [], now: t0 + .milliseconds(10))
        #expect(registry.lookup(Self.keys, excluding: "c", now: t0 + .seconds(1))?.instanceID == "b")
    }
}

package import Kernels

/// Scratch memory for forward passes: activation buffers and kernel scratch, reused between calls.
///
/// One workspace serves one forward pass at a time; make one per session.
public final class Workspace {
    private var buffers: [UnsafeMutablePointer<Float>?]
    private var capacities: [Int]
    package let linear = LinearScratch()
    package let attention = AttentionScratch()

    /// An empty workspace; buffers grow on first use.
    public init() {
        buffers = Array(repeating: nil, count: 16)
        capacities = Array(repeating: 0, count: 16)
    }

    deinit {
        for b in buffers { b?.deallocate() }
    }

    /// Buffer number `slot` with room for at least `count` floats (contents undefined).
    package func buffer(_ slot: Int, _ count: Int) -> UnsafeMutablePointer<Float> {
        if let b = buffers[slot], capacities[slot] >= count { return b }
        buffers[slot]?.deallocate()
        let fresh = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        buffers[slot] = fresh
        capacities[slot] = max(count, 1)
        return fresh
    }
}

@available(*, unavailable)
extension Workspace: Sendable {}

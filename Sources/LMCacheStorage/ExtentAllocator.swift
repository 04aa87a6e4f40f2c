/// First-fit allocation of byte ranges ("extents") inside a fixed region, with coalescing.
///
/// Free space is a list of disjoint extents sorted by offset; adjacent free extents are merged on
/// release, so a region emptied of allocations is one free extent again. Every allocation is
/// rounded up to `alignment`.
///
/// - Complexity: `allocate` and `release` are O(*f*) in the number of free extents, which stays
///   small when chunks have similar sizes (the common case: one model, full chunks).
package struct ExtentAllocator: Sendable {
    package struct Extent: Hashable, Sendable {
        package var offset: Int
        package var length: Int
        package var end: Int { offset + length }

        package init(offset: Int, length: Int) {
            self.offset = offset
            self.length = length
        }
    }

    package let capacity: Int
    package let alignment: Int
    package private(set) var free: [Extent]
    package private(set) var usedBytes: Int = 0

    package init(capacity: Int, alignment: Int) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        self.alignment = alignment
        self.capacity = capacity / alignment * alignment
        self.free = self.capacity > 0 ? [Extent(offset: 0, length: self.capacity)] : []
    }

    /// `count` rounded up to the alignment; `nil` when that overflows.
    package func roundedSize(_ count: Int) -> Int? {
        let (sum, overflow) = max(count, 1).addingReportingOverflow(alignment - 1)
        return overflow ? nil : sum & ~(alignment - 1)
    }

    /// Allocates `count` bytes; `nil` when no free extent is large enough.
    package mutating func allocate(_ count: Int) -> Extent? {
        guard let size = roundedSize(count) else { return nil }
        for index in free.indices where free[index].length >= size {
            let extent = Extent(offset: free[index].offset, length: size)
            if free[index].length == size {
                free.remove(at: index)
            } else {
                free[index].offset += size
                free[index].length -= size
            }
            usedBytes += size
            return extent
        }
        return nil
    }

    /// Returns `extent` (as `allocate` gave it) to the free list.
    package mutating func release(_ extent: Extent) {
        // Binary search for the first free extent after this one.
        var low = 0
        var high = free.count
        while low < high {
            let mid = (low + high) / 2
            if free[mid].offset < extent.offset { low = mid + 1 } else { high = mid }
        }
        assert(low == 0 || free[low - 1].end <= extent.offset, "double release")
        assert(low == free.count || extent.end <= free[low].offset, "double release")
        usedBytes -= extent.length
        let mergesBefore = low > 0 && free[low - 1].end == extent.offset
        let mergesAfter = low < free.count && extent.end == free[low].offset
        switch (mergesBefore, mergesAfter) {
        case (true, true):
            free[low - 1].length += extent.length + free[low].length
            free.remove(at: low)
        case (true, false):
            free[low - 1].length += extent.length
        case (false, true):
            free[low].offset = extent.offset
            free[low].length += extent.length
        case (false, false):
            free.insert(extent, at: low)
        }
    }

    /// The largest free extent's length.
    package var largestFree: Int { free.map(\.length).max() ?? 0 }

    #if LMCACHE_INTERNAL_CHECKS
    package func _checkInvariants() {
        var total = 0
        for (i, extent) in free.enumerated() {
            precondition(extent.length > 0 && extent.offset % alignment == 0 && extent.length % alignment == 0)
            if i > 0 { precondition(free[i - 1].end < extent.offset, "free extents unsorted or unmerged") }
            total += extent.length
        }
        precondition(total + usedBytes == capacity, "allocator lost bytes")
    }
    #else
    @inline(__always) package func _checkInvariants() {}
    #endif
}

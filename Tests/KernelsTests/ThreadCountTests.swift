import Foundation
import Testing

@testable import Kernels

/// How the default thread count is read from the process's CPU affinity and cgroup quota.
@Suite("Parallel thread count")
struct ParallelThreadCountTests {
    @Test("Cpus_allowed_list ranges are counted", arguments: [
        ("Cpus_allowed_list:\t0-3,8,10-11\n", 7),
        ("Name:\tx\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n", 1),
        ("Cpus_allowed_list:\t0-63\n", 64),
    ])
    func allowedList(status: String, expected: Int) {
        #expect(Parallel.allowedCPUs(status: status) == expected)
    }

    @Test("unreadable affinity text gives nil, not a guess", arguments: [
        "Name:\tx\n", "Cpus_allowed_list:\t\n", "Cpus_allowed_list:\t3-1\n", "Cpus_allowed_list:\ta-b\n",
    ])
    func unreadableAffinity(status: String) {
        #expect(Parallel.allowedCPUs(status: status) == nil)
    }

    @Test("cgroup v2 cpu.max: a quota in CPUs, none for max")
    func cpuMax() {
        #expect(Parallel.cpuMaxQuota("150000 100000\n") == 1.5)
        #expect(Parallel.cpuMaxQuota("100000 100000") == 1)
        #expect(Parallel.cpuMaxQuota("max 100000\n") == nil)
        #expect(Parallel.cpuMaxQuota("") == nil)
    }

    @Test("the count is the affinity capped by the quota rounded up, at least 1")
    func combined() {
        #expect(Parallel.threads(affinity: 16, quota: nil) == 16)
        #expect(Parallel.threads(affinity: 16, quota: 1) == 1)
        #expect(Parallel.threads(affinity: 16, quota: 1.5) == 2)
        #expect(Parallel.threads(affinity: 2, quota: 8) == 2)
        #expect(Parallel.threads(affinity: 0, quota: 0.1) == 1)
    }

    @Test("this process's default is between 1 and the host's cores")
    func thisProcess() {
        let n = Parallel.availableCPUs()
        #expect(n >= 1)
        #expect(n <= ProcessInfo.processInfo.processorCount)
    }
}

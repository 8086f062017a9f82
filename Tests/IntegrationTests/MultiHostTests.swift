import Foundation
import Testing

/// rec-dist across several hosts: network namespaces on a bridge (scripts/netns-cluster.sh), each
/// with its own address on 198.18.0.0/24, reached by `mpirun --hostfile hostfiles/netns-test`
/// through launch.sh with an rsh agent that enters the namespace. MPI traffic is TCP on that subnet
/// only, which exists only on the links these tests make. Every test takes its hosts down, killing
/// what is left in them, also on failure.
@Suite(.serialized, .enabled(if: Cluster.canRunPrivilegedTests,
                             "needs root: creates network namespaces (always run in CI)"))
struct MultiHostTests {
    /// Two ranks on two hosts train to the same parameters as two ranks on one host.
    @Test func twoHostsGiveTheSameParametersAsOneHost() throws {
        let hosts = try NamespaceHosts.up(hosts: 2)
        defer { hosts.down() }
        let data = try RecDist.synthData(rows: 250)
        let args = ["train", "--data", data, "--eval-fraction", "0", "--model", "dlrm", "--hash-buckets", "500",
                    "--optimizer", "adam", "--batch-size", "6", "--steps", "25", "--seed", "3"]

        let twoHosts = try RecDist.scratch("two-hosts")
        let out = try hosts.launch(2, args + ["--checkpoint-dir", twoHosts], timeout: 180)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("on 2 rank(s)"))
        // Rank 1 really ran on the second host: mpirun started a daemon there through the agent.
        #expect(hosts.agentLines.contains { $0.hasPrefix("198.18.0.2:") }, "agent log: \(hosts.agentLines)")

        let oneHost = try RecDist.scratch("one-host")
        let local = try RecDist.ranks(2, args + ["--checkpoint-dir", oneHost], timeout: 180)
        #expect(local.status == 0, "\(local.all)")

        let a = try RecDist.checkpointTensors(twoHosts), b = try RecDist.checkpointTensors(oneHost)
        #expect(!a.isEmpty)
        let diff = RecDist.maxDifference(a, b)
        #expect(diff < 1e-4, "2 hosts differ from 1 host by \(diff)")
    }

    /// Row-sharded tables across two hosts (the lookups and gradients travel by alltoallv over
    /// the hosts' link; the checkpoint's rows through rank 0) train to the parameters of
    /// replicated tables on one host.
    @Test func shardedTablesOverTwoHostsEqualReplicatedOnOne() throws {
        let hosts = try NamespaceHosts.up(hosts: 2)
        defer { hosts.down() }
        let data = try RecDist.synthData(rows: 250)
        let args = ["train", "--data", data, "--eval-fraction", "0.1", "--model", "dlrm", "--hash-buckets", "500",
                    "--optimizer", "adam", "--batch-size", "6", "--steps", "25", "--seed", "3"]
        let sharded = try RecDist.scratch("two-hosts-sharded")
        let out = try hosts.launch(2, args + ["--embedding-sharding", "row", "--checkpoint-dir", sharded], timeout: 180)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.all.contains("row-wise over 2 ranks"), "\(out.all)")
        #expect(hosts.agentLines.contains { $0.hasPrefix("198.18.0.2:") }, "agent log: \(hosts.agentLines)")
        let replicated = try RecDist.scratch("one-host-replicated")
        let local = try RecDist.ranks(2, args + ["--checkpoint-dir", replicated], timeout: 180)
        #expect(local.status == 0, "\(local.all)")
        let a = try RecDist.checkpointTensors(sharded), b = try RecDist.checkpointTensors(replicated)
        #expect(!a.isEmpty)
        let diff = RecDist.maxDifference(a, b)
        #expect(diff < 1e-4, "sharded over 2 hosts differs from replicated by \(diff)")
    }

    /// Cutting the second host's link mid-run ends the job within 30 s with Open MPI's message
    /// (launch.sh lowers the out-of-band keepalive; the default would wait for TCP's timeout,
    /// many minutes). With the link back, the same command with --auto-resume continues from the
    /// last checkpoint and ends with the parameters of an uninterrupted run.
    @Test func cutLinkEndsTheJobAndAutoResumeCompletesIt() throws {
        let hosts = try NamespaceHosts.up(hosts: 2)
        defer { hosts.down() }
        let data = try RecDist.synthData(rows: 2000)
        let steps = 8000
        let dir = try RecDist.scratch("cut")
        let args = ["train", "--data", data, "--model", "mlp", "--batch-size", "8", "--steps", "\(steps)",
                    "--seed", "5", "--log-every", "1000", "--checkpoint-dir", dir + "/ck",
                    "--checkpoint-every", "500", "--auto-resume"]

        // Start the run in the background, cut host 2 off once a checkpoint exists.
        let job = try hosts.start(2, args)
        let checkpointed = Cluster.waitUntil(timeout: 120) {
            FileManager.default.fileExists(atPath: dir + "/ck/latest") || !job.process.isRunning
        }
        try #require(checkpointed && job.process.isRunning, "the run ended before its first checkpoint: \(job.stdout)\n\(job.stderr)")
        let cutAt = Date()
        try hosts.setLink(host: 2, up: false)
        let first = job.wait(timeout: 240)
        let endedAfter = Date().timeIntervalSince(cutAt)
        #expect(!first.timedOut)
        #expect(first.status != 0, "\(first.all)")
        #expect(endedAfter < 30, "the job took \(endedAfter) s to end after the link was cut")
        #expect(first.all.contains("lost communication"), "\(first.all)")
        #expect(!first.stdout.contains("done: \(steps) steps"), "the run finished before the cut: \(first.all)")

        // Leftovers of the cut host (its daemon and rank) must not outlive the job for long either.
        try hosts.setLink(host: 2, up: true)
        let resumed = try hosts.launch(2, args, timeout: 240)
        #expect(resumed.status == 0, "\(resumed.all)")
        #expect(resumed.stdout.contains("resuming from"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("done: \(steps) steps"), "\(resumed.stdout)")

        // Resuming is exact: the same parameters as one uninterrupted run of the same steps.
        let reference = try RecDist.scratch("cut-reference")
        let plain = Array(args.prefix(while: { $0 != "--checkpoint-dir" })) + ["--checkpoint-dir", reference]
        let whole = try RecDist.ranks(2, plain, timeout: 240)
        #expect(whole.status == 0, "\(whole.all)")
        let diff = RecDist.maxDifference(try RecDist.checkpointTensors(dir + "/ck"), try RecDist.checkpointTensors(reference))
        #expect(diff < 1e-4, "resumed run differs from an uninterrupted one by \(diff)")
    }
}

import Foundation
import Testing

/// What the cluster tests need from this machine, and small process helpers for them.
enum Cluster {
    /// `scripts/NAME` in the package.
    static func script(_ name: String) -> String { RecDist.packageRoot + "/scripts/" + name }

    static var isRoot: Bool { getuid() == 0 }

    /// CI must run the cluster tests: there a missing capability fails them instead of skipping.
    static var inCI: Bool { ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" } ?? false }

    /// The Slurm and network-namespace tests install packages (apt-get), start daemons and make
    /// namespaces: that takes root. Elsewhere (a developer's unprivileged shell) they are skipped,
    /// never in CI.
    static var canRunPrivilegedTests: Bool { isRoot || inCI }

    /// Runs a short command and returns its status and output (both streams); kills it after
    /// `timeout` seconds.
    @discardableResult
    static func capture(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                        timeout: Double = 60) throws -> (status: Int32, output: String) {
        let out = try RecDist.run(executable, arguments, timeout: timeout, environment: environment)
        return (out.timedOut ? -1 : out.status, out.all)
    }

    /// Polls `condition` every `interval` seconds until it returns true or `timeout` passes.
    static func waitUntil(timeout: Double, interval: Double = 0.3, _ condition: () throws -> Bool) rethrows -> Bool {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if try condition() { return true }
            usleep(UInt32(interval * 1_000_000))
        }
        return try condition()
    }

    /// A name unique to this test process and call, for namespaces and job names.
    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)\(getpid() % 100_000)\(UUID().uuidString.prefix(4).lowercased())"
    }
}

/// A one-node Slurm cluster of scripts/slurm-local.sh, with its own configuration in a temporary
/// directory. Stop it (by the daemons' PIDs) when done, also when the test fails.
struct SlurmCluster {
    let directory: String
    var environment: [String: String] { ["SLURM_CONF": directory + "/slurm.conf"] }

    /// Installs Slurm and munge when missing and starts the daemons; the node is idle on return.
    static func start() throws -> SlurmCluster {
        let dir = try RecDist.scratch("slurm")
        let out = try Cluster.capture("/bin/bash", [Cluster.script("slurm-local.sh"), "start", dir], timeout: 600)
        guard out.status == 0 else {
            _ = try? Cluster.capture("/bin/bash", [Cluster.script("slurm-local.sh"), "stop", dir])
            throw TestDataError(message: "slurm-local.sh start failed (\(out.status)):\n\(out.output)")
        }
        return SlurmCluster(directory: dir)
    }

    func stop() {
        let out = try? Cluster.capture("/bin/bash", [Cluster.script("slurm-local.sh"), "stop", directory], timeout: 90)
        if out?.status != 0 { Issue.record("slurm-local.sh stop failed: \(out?.output ?? "did not run")") }
    }

    /// A Slurm command (squeue, scontrol, scancel...) against this cluster.
    func command(_ name: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try Cluster.capture("/usr/bin/" + name, arguments, environment: environment, timeout: 30)
    }

    /// `./launch.sh --slurm ARGS`: the job id it printed, or a recorded issue.
    func submit(_ launchArguments: [String]) throws -> (job: String, output: RecDist.Output) {
        let out = try RecDist.run("/bin/bash", [RecDist.packageRoot + "/launch.sh", "--slurm"] + launchArguments,
                                  timeout: 300, environment: environment)
        let job = out.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return (job, out)
    }

    /// `scontrol show job` fields of `job` (JobState, ExitCode, Restarts...).
    func jobFields(_ job: String) throws -> [String: String] {
        let out = try command("scontrol", ["show", "job", "-o", job])
        var fields: [String: String] = [:]
        for word in out.output.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            guard let eq = word.firstIndex(of: "=") else { continue }
            fields[String(word[..<eq])] = String(word[word.index(after: eq)...])
        }
        return fields
    }

    /// Polls squeue/scontrol until `job` reaches a final state; returns its fields.
    func waitForEnd(_ job: String, timeout: Double) throws -> [String: String] {
        let final: Set<String> = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"]
        var fields: [String: String] = [:]
        _ = try Cluster.waitUntil(timeout: timeout) {
            fields = try jobFields(job)
            return final.contains(fields["JobState"] ?? "")
        }
        return fields
    }

    /// The daemons' logs, for a failure message.
    var logs: String {
        ["log/slurmctld.log", "log/slurmd.log"].map { name in
            let text = (try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)) ?? ""
            return "== \(name)\n" + text.split(separator: "\n").suffix(15).joined(separator: "\n")
        }.joined(separator: "\n")
    }
}

/// Test hosts in network namespaces (scripts/netns-cluster.sh): host k is 198.18.0.k, reached by
/// Open MPI through scripts/netns-rsh. Take them down when done, also when the test fails.
struct NamespaceHosts {
    let name: String
    let hosts: Int
    /// Where scripts/netns-rsh notes each daemon it starts, so tests can see ranks ran remotely.
    let agentLog: String

    static func up(hosts: Int = 2) throws -> NamespaceHosts {
        let name = Cluster.uniqueName("rdt")
        let log = try RecDist.scratch("netns") + "/agent.log"
        let out = try Cluster.capture("/bin/bash", [Cluster.script("netns-cluster.sh"), "up", name, "\(hosts)"], timeout: 300)
        guard out.status == 0 else {
            _ = try? Cluster.capture("/bin/bash", [Cluster.script("netns-cluster.sh"), "down", name])
            throw TestDataError(message: "netns-cluster.sh up failed (\(out.status)):\n\(out.output)")
        }
        return NamespaceHosts(name: name, hosts: hosts, agentLog: log)
    }

    func down() {
        let out = try? Cluster.capture("/bin/bash", [Cluster.script("netns-cluster.sh"), "down", name], timeout: 60)
        if out?.status != 0 { Issue.record("netns-cluster.sh down failed: \(out?.output ?? "did not run")") }
    }

    /// Takes host k's link down (`up: false`) or back up.
    func setLink(host k: Int, up: Bool) throws {
        let out = try Cluster.capture("/bin/bash", [Cluster.script("netns-cluster.sh"), up ? "mend" : "cut", name, "\(k)"])
        guard out.status == 0 else { throw TestDataError(message: "netns-cluster.sh: \(out.output)") }
    }

    /// launch.sh's mpirun options for these hosts: the test hostfile, the namespace rsh agent, no
    /// binding (every fake host shares this machine's cores), TCP only and only on the test subnet.
    static let launchOptions: [String] = [
        "--hostfile", RecDist.packageRoot + "/hostfiles/netns-test", "--bind-to", "none",
        "--mca", "plm_rsh_agent", Cluster.script("netns-rsh"),
        "--mca", "btl", "tcp,self",
        "--mca", "btl_tcp_if_include", "198.18.0.0/24",
        "--mca", "oob_tcp_if_include", "198.18.0.0/24",
    ]

    /// `./launch.sh -np N <launchOptions> -- ARGS`, started in the background on host 1 (mpirun
    /// runs there).
    func start(_ n: Int, _ arguments: [String]) throws -> RecDist.Job {
        try RecDist.start("/bin/bash",
                          [Cluster.script("netns-cluster.sh"), "exec", name, "1", RecDist.packageRoot + "/launch.sh",
                           "-np", "\(n)"] + Self.launchOptions + ["--"] + arguments,
                          environment: ["REC_DIST_NETNS": name, "REC_DIST_NETNS_LOG": agentLog])
    }

    /// The same, waiting for the end (killed after `timeout` seconds).
    func launch(_ n: Int, _ arguments: [String], timeout: Double) throws -> RecDist.Output {
        try start(n, arguments).wait(timeout: timeout)
    }

    /// The daemons scripts/netns-rsh started, one line each: "HOST: COMMAND".
    var agentLines: [String] {
        ((try? String(contentsOfFile: agentLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}

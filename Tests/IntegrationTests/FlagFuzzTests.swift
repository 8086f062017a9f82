import Foundation
import Synchronization
import Testing

/// Every numeric flag of train, prepare, bench, predict, recommend and explain, and every numeric
/// field of a --model-config file, set to values out of range (-1, 0, huge, NaN, text), through
/// the real binary: each is refused with exit 64 and a message naming the flag or field, or, where
/// the value is in range, the run ends as a run does (0, or 1 naming what failed) and never with a
/// signal; peak RSS stays under 1 GB. The flags are read from the `@Option` declarations in
/// Sources/rec-dist, so a numeric flag added without a sweep entry here fails the test.
@Suite(.serialized)
struct FlagFuzzTests {
    enum Kind: String {
        case int, real, seed, widths, bytes
    }

    static let kinds: [String: Kind] = ["Int": .int, "Int?": .int, "Double": .real, "Double?": .real, "Float": .real, "Float?": .real,
                                        "UInt64": .seed, "UInt64?": .seed, "LayerWidths?": .widths, "ByteCountArgument?": .bytes]

    /// The values swept per kind, and whether each must be refused (true) or may also be accepted.
    static let values: [Kind: [(text: String, refused: Bool)]] = [
        .int: [("-1", true), ("0", false), ("1000000000000", false), ("9223372036854775807", false), ("9223372036854775808", true),
               ("1e12", true), ("nan", true), ("abc", true)],
        .real: [("-1", true), ("0", false), ("1e12", false), ("1e39", false), ("nan", true), ("inf", false), ("abc", true)],
        .seed: [("-1", true), ("0", false), ("18446744073709551615", false), ("18446744073709551616", true), ("abc", true)],
        .widths: [("-1", true), ("0", true), ("8,0", true), ("1000000000000", false), ("9223372036854775808", true), ("abc", true)],
        .bytes: [("-1", true), ("0", true), ("1e12", false), ("9223372036854775808", false), ("nan", true), ("abc", true), ("1e12T", true)],
    ]

    /// The numeric flags of each subcommand (by command name), read from the `@Option`
    /// declarations of its struct and of its `@OptionGroup`s.
    static func declaredFlags() throws -> [String: [String: Kind]] {
        let directory = RecDist.packageRoot + "/Sources/rec-dist"
        var options: [String: [String: Kind]] = [:], groups: [String: [String]] = [:], commands: [String] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: directory) where file.hasSuffix(".swift") {
            let lines = try String(contentsOfFile: directory + "/" + file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            var current: String?
            var attribute: String?
            for line in lines {
                if line.hasPrefix("}") { current = nil }
                if line.hasPrefix("struct "), let colon = line.firstIndex(of: ":") {
                    let name = String(line.dropFirst(7)[..<colon])
                    let isCommand = line.contains("ParsableCommand")
                    current = isCommand || line.contains("ParsableArguments") ? name : nil
                    if isCommand { commands.append(name) }
                    continue
                }
                guard let current else { continue }
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.hasPrefix("@OptionGroup"), let type = trimmed.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) {
                    groups[current, default: []].append(type)
                    continue
                }
                if trimmed.hasPrefix("@Option(") { attribute = "" }
                guard let text = attribute.map({ $0 + trimmed + " " }) else { continue }
                attribute = text
                // The declaration: `var name: Type`, on its own line or after the attribute.
                guard let v = trimmed.range(of: "var ", options: .backwards),
                      trimmed.hasPrefix("var ") || trimmed[..<v.lowerBound].hasSuffix(") ") else { continue }
                let parts = trimmed[v.upperBound...].split(separator: ":", maxSplits: 1)
                let name = parts[0].trimmingCharacters(in: .whitespaces)
                let type = parts[1].split(separator: "=")[0].trimmingCharacters(in: .whitespaces)
                var flag = "--" + name.reduce("") { $0 + ($1.isUppercase ? "-" + $1.lowercased() : String($1)) }
                if let custom = text.range(of: ".customLong(\"") { flag = "--" + text[custom.upperBound...].prefix { $0 != "\"" } }
                if let kind = kinds[type] { options[current, default: [:]][flag] = kind }
                attribute = nil
            }
        }
        func flags(of type: String) -> [String: Kind] {
            (groups[type] ?? []).reduce(options[type] ?? [:]) { $0.merging(flags(of: $1)) { a, _ in a } }
        }
        return Dictionary(uniqueKeysWithValues: commands.map { ($0 == "ReportCommand" ? "report" : $0.lowercased(), flags(of: $0)) })
    }

    /// What each swept command runs on: its arguments, and per flag the arguments it needs besides
    /// (replacing the base's value of the same flag). `DIR` is a fresh directory per run.
    struct Fixture {
        var tsv: String, prepared: String, checkpoint: String, interactions: String, interactionCheckpoint: String
    }

    static func base(_ command: String, _ f: Fixture) -> [(String, String)] {
        switch command {
        case "train": return [("--data", f.tsv), ("--steps", "2"), ("--batch-size", "16")]
        case "prepare": return [("--format", "criteo"), ("--input", f.tsv), ("--out", "DIR/prepared")]
        case "bench": return [("--case", "mlp:8"), ("--windows", "1"), ("--window-seconds", "0.01"), ("--warmup-steps", "0"),
                              ("--warmup-seconds", "0"), ("--sgemm-seconds", "0.01")]
        case "predict": return [("--checkpoint", f.checkpoint), ("--input", f.tsv), ("--out", "DIR/scores.csv")]
        case "recommend": return [("--checkpoint", f.interactionCheckpoint), ("--data", f.interactions), ("--user", "u1")]
        default: return [("--checkpoint", f.checkpoint), ("--data", f.tsv), ("--repeats", "1"), ("--out", "DIR/explain.html")]
        }
    }

    /// Every numeric flag swept, by command, with what it needs besides the base arguments.
    static func sweep(_ f: Fixture) -> [String: [String: [(String, String)]]] {
        let dlrm = [("--model", "dlrm"), ("--hash-buckets", "64")], checkpoints = [("--checkpoint-dir", "DIR/ck")]
        let preparedData = [("--data", f.prepared)]
        return [
            "train": ["--eval-fraction": [], "--shuffle-window": preparedData, "--prefetch": preparedData, "--resident-data": preparedData,
                      "--hidden": [], "--dense-features": [], "--embedding-dim": dlrm, "--bottom": dlrm, "--top": dlrm, "--factors": [],
                      "--dropout": [], "--batch-size": [], "--epochs": [], "--steps": [], "--seed": [], "--lr": [],
                      "--momentum": [("--optimizer", "momentum")], "--weight-decay": [], "--accumulate": [], "--clip-norm": [],
                      "--warmup-steps": [], "--min-lr-ratio": [("--lr-schedule", "linear")],
                      "--lr-decay-every": [("--lr-schedule", "step")], "--lr-decay-factor": [("--lr-schedule", "step")],
                      "--hash-buckets": [("--model", "dlrm")], "--bucket-kib": [], "--blas-threads": [], "--memory-per-rank": [],
                      "--eval-every": [], "--early-stop-patience": [("--eval-every", "1")],
                      "--early-stop-min-delta": [("--eval-every", "1"), ("--early-stop-patience", "2")], "--k": [],
                      "--checkpoint-every": checkpoints, "--checkpoint-every-seconds": checkpoints, "--keep": checkpoints,
                      "--log-every": [], "--debug-check-every": [("--debug", "")], "--collective-timeout": []],
            "prepare": ["--min-count": [], "--hash-buckets": [], "--valid-fraction": [], "--test-fraction": [], "--negatives": [],
                        "--eval-negatives": [], "--seed": [], "--max-bad-rows": [], "--threads": []],
            "bench": ["--warmup-steps": [], "--warmup-seconds": [], "--windows": [], "--window-seconds": [], "--sgemm-seconds": [],
                      "--resident-data-mb": [], "--hash-buckets": [], "--bucket-kib": [], "--blas-threads": [], "--memory-per-rank": []],
            "predict": ["--limit": [], "--batch-size": []],
            "recommend": ["--k": []],
            "explain": ["--repeats": [], "--seed": [], "--max-rows": []],
        ]
    }

    /// Values that ask for a run longer than the sweep waits: it is stopped with SIGTERM after
    /// a few seconds and must then end as a stopped run does (76: nothing was saved).
    static let longRuns: Set<String> = ["train --steps 1000000000000", "train --steps 9223372036854775807"]

    /// The sweep's small inputs: a TSV file, its prepared dataset, a checkpoint trained on it, and
    /// an interaction dataset with a checkpoint (for recommend).
    static func fixture() throws -> Fixture {
        let root = try RecDist.scratch("flag-sweep")
        let tsv = try RecDist.synthData(rows: 200)
        var out = try RecDist.single(["prepare", "--format", "criteo", "--input", tsv, "--out", root + "/prepared"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["train", "--data", tsv, "--steps", "2", "--checkpoint-dir", root + "/ck"])
        try #require(out.status == 0, "\(out.all)")
        let interactions = try RecDist.preparedInteractions(in: root, users: 30, perUser: 8, items: 40)
        out = try RecDist.single(["train", "--data", interactions, "--model", "ncf", "--steps", "2", "--checkpoint-dir", root + "/ck-ncf"])
        try #require(out.status == 0, "\(out.all)")
        return Fixture(tsv: tsv, prepared: root + "/prepared", checkpoint: root + "/ck", interactions: interactions,
                       interactionCheckpoint: root + "/ck-ncf")
    }

    /// One sweep case's command line, with `DIR` made a fresh directory.
    static func arguments(_ command: String, _ flag: String, _ value: String, _ fixture: Fixture, context: [(String, String)]) throws -> [String] {
        let dir = try RecDist.scratch("flag")
        var pairs = base(command, fixture).filter { pair in pair.0 != flag && !context.contains { $0.0 == pair.0 } } + context + [(flag, value)]
        pairs = pairs.map { ($0.0, $0.1.replacingOccurrences(of: "DIR", with: dir)) }
        return [command] + pairs.flatMap { $0.1.isEmpty ? [$0.0] : [$0.0, $0.1] }
    }

    @Test func everyNumericFlagIsSwept() throws {
        let declared = try Self.declaredFlags()
        let fixture = try Self.fixture()
        let sweep = Self.sweep(fixture)
        for (command, table) in sweep {
            let flags = try #require(declared[command], "no command \(command) in Sources/rec-dist")
            #expect(Set(flags.keys) == Set(table.keys),
                    "\(command): declared numeric flags without a sweep entry: \(Set(flags.keys).subtracting(table.keys).sorted()); entries for no flag: \(Set(table.keys).subtracting(flags.keys).sorted())")
        }
        // Not vacuous: the parse found the flags of the groups too.
        #expect(declared["train"]?["--prefetch"] == .int && declared["bench"]?["--blas-threads"] == .int, "\(declared)")

        var toRun: [(command: String, flag: String, value: String, refused: Bool, args: [String])] = []
        for (command, table) in sweep.sorted(by: { $0.key < $1.key }) {
            for (flag, context) in table.sorted(by: { $0.key < $1.key }) {
                guard let kind = declared[command]?[flag] else { continue }
                for (value, refused) in Self.values[kind]! {
                    toRun.append((command, flag, value, refused, try Self.arguments(command, flag, value, fixture, context: context)))
                }
            }
        }
        let cases = toRun
        let all = concurrently(cases.count) { i in
            let c = cases[i]
            let problems = try Self.check(c.args, flag: c.flag, refused: c.refused, long: Self.longRuns.contains("\(c.command) \(c.flag) \(c.value)"))
            return problems.map { "\(c.command) \(c.flag) \(c.value): \($0)" }
        }
        #expect(all.isEmpty, "\(all.count) problems in \(cases.count) cases:\n\(all.sorted().joined(separator: "\n"))")
    }

    /// The problems of one run of `args`: a refusal must be exit 64 naming `flag`; an accepted
    /// value must end as a run does; never a signal, never 1 GB of RSS.
    static func check(_ args: [String], flag: String, refused: Bool, long: Bool) throws -> [String] {
        var problems: [String] = []
        let out: RecDist.Output, peak: Int
        if long {
            let job = try RecDist.start(RecDist.binary, args)
            usleep(3_000_000)
            // The peak so far (VmHWM), then the stop.
            let status = (try? String(contentsOfFile: "/proc/\(job.process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }?.split(separator: " ").dropFirst().first
            kill(job.process.processIdentifier, SIGTERM)
            out = job.wait(timeout: 30)
            peak = hwm.flatMap { Int($0) }.map { $0 / 1024 } ?? -1
            if out.status != 76 { problems.append("stopped by SIGTERM, exit \(out.status), expected 76: \(out.stderr.suffix(300))") }
        } else {
            (out, peak) = try RecDist.measured(args, timeout: 60)
            if out.timedOut { problems.append("still running after 60 s") }
            if out.status == 64 {
                if !out.stderr.contains(flag) { problems.append("exit 64 without naming \(flag): \(out.stderr.suffix(300))") }
            } else if refused {
                problems.append("exit \(out.status), expected 64: \(out.all.suffix(300))")
            } else if out.status != 0 && !(out.status == 1 && out.stderr.contains("error: ")) {
                problems.append("exit \(out.status): \(out.all.suffix(300))")
            }
        }
        if peak < 0 || peak >= 1024 { problems.append("peak RSS \(peak) MB") }
        return problems
    }

    /// Every numeric field of a model configuration file, set to values out of range or of the
    /// wrong type: exit 64 naming the file and the field, or (in range) a run that trains.
    @Test func everyNumericModelConfigFieldIsSwept() throws {
        let tsv = try RecDist.synthData(rows: 200)
        let fields: [(key: String, model: String, list: Bool)] = [
            ("hidden", "mlp", true), ("dense_features", "mlp", false), ("hash_buckets", "dlrm", false), ("embedding_dim", "dlrm", false),
            ("bottom", "dlrm", true), ("bottom_output", "dlrm", false), ("top", "dlrm", true), ("factors", "ncf", false),
            ("user_fields", "ncf", true), ("item_fields", "ncf", true), ("dropout", "mlp", false)]
        let keys = try String(contentsOfFile: RecDist.packageRoot + "/Sources/RecTrainer/ModelConfigFile.swift", encoding: .utf8)
        let nonNumeric: Set<String> = ["model", "initializer", "activation"]
        for key in keys.components(separatedBy: "public static let keys = [")[1].prefix(while: { $0 != "]" }).split(separator: ",") {
            let name = key.trimmingCharacters(in: CharacterSet(charactersIn: " \n\""))
            #expect(nonNumeric.contains(name) || fields.contains { $0.key == name }, "model config key \(name) has no sweep entry")
        }
        let values: [(Any, refused: Bool)] = [(-1, true), (0, false), (1_000_000_000_000, true), (Int.max, true), (UInt64(1) << 63, true),
                                              (0.5, false), ("abc", true), (NSNull(), true)]
        var cases: [(name: String, key: String, refused: Bool, whole: Bool, config: Data)] = []
        for (key, model, list) in fields {
            for (value, refused) in values {
                var config: [String: Any] = ["model": model]
                if model == "ncf" { config.merge(["user_fields": ["C1"], "item_fields": ["C2"]]) { _, b in b } }
                config[key] = list ? [value] : value
                cases.append(("\(key) = \(list ? "[\(value)]" : "\(value)")", key, refused, value is Int || value is UInt64,
                              try JSONSerialization.data(withJSONObject: config)))
            }
        }
        let all = cases
        let failures = concurrently(all.count) { i in
            let c = all[i]
            let path = try RecDist.scratch("config") + "/config.json"
            try c.config.write(to: URL(fileURLWithPath: path))
            let hash = c.key == "hash_buckets" ? [] : ["--hash-buckets", "64"]
            let (out, peak) = try RecDist.measured(["train", "--data", tsv, "--steps", "1", "--model-config", path] + hash)
            var problems: [String] = []
            if out.status == 64 {
                if !out.stderr.contains("\(c.key): ") { problems.append("\(c.name): exit 64 without naming \(c.key): \(out.stderr)") }
                // A whole number is out of range, not "not an integer".
                if c.whole && out.stderr.contains("expected") { problems.append("\(c.name): \(out.stderr)") }
            } else if c.refused || out.status != 0 {
                // Only values in range for the field (dropout 0.5, user_fields [0]) may train.
                problems.append("\(c.name): exit \(out.status): \(out.all.suffix(300))")
            }
            if peak < 0 || peak >= 1024 { problems.append("\(c.name): peak RSS \(peak) MB") }
            return problems
        }
        #expect(failures.isEmpty, "\(failures.count) cases:\n\(failures.joined(separator: "\n"))")
    }
}

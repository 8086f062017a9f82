import ArgumentParser
import Foundation
import Logging
import RecCore
import RecTrainer

@main
struct RecDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rec-dist",
        abstract: "Data-parallel CPU training of recommendation models over MPI.",
        discussion: """
        Run one process with `rec-dist train ...`, or N ranks with `mpirun -np N rec-dist train ...`
        (or `./launch.sh -np N -- train ...`, which sets the right mpirun flags for this machine).
        """,
        version: "0.1.0",
        subcommands: [Synth.self, Prepare.self, Train.self, Predict.self, Recommend.self, Explain.self, Export.self,
                      ReportCommand.self, Bench.self, Baseline.self])

    /// Exit status of a run with --checkpoint-dir stopped by SIGTERM/SIGINT after writing its checkpoint (EX_TEMPFAIL:
    /// "try again later"; `--auto-resume` continues it).
    static let interruptedExitCode: Int32 = 75
    /// Exit status of a run stopped by SIGTERM/SIGINT without --checkpoint-dir: nothing was
    /// saved, there is nothing to resume.
    static let interruptedUnsavedExitCode: Int32 = 76

    /// Parses the command line and runs the subcommand. Under mpirun every rank parses the same
    /// command line and comes to the same verdict, so rank 0 alone prints a usage error and it
    /// reads once, not interleaved. The other ranks wait: mpirun ends them when rank 0 exits, and
    /// one still running 2 s later (rank 0 decided otherwise) prints its own. Every rank exits
    /// with its code.
    static func main() {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let environment = ProcessInfo.processInfo.environment
            if let rank = Int(environment["OMPI_COMM_WORLD_RANK"] ?? environment["PMIX_RANK"] ?? ""), rank > 0 {
                sleep(2)
                FileHandle.standardError.write(Data("[rank \(rank)] ".utf8))
            }
            exit(withError: error)
        }
        do {
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// Logging flags shared by every subcommand.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

extension OptimizerKind: ExpressibleByArgument {}
extension ModelKind: ExpressibleByArgument {}
extension Loss: ExpressibleByArgument {}
extension Initializer: ExpressibleByArgument {}
extension Activation: ExpressibleByArgument {}
extension SelectionMetric: ExpressibleByArgument {}
extension LearningRateDecay: ExpressibleByArgument {}

func printError(_ message: String, rank: Int? = nil) {
    let prefix = rank.map { $0 == 0 ? "" : "[rank \($0)] " } ?? ""
    FileHandle.standardError.write(Data("\(prefix)error: \(message)\n".utf8))
}

/// Runs a command's work: an error it throws is printed as one `error:` line and the command
/// exits with status 1 (a failed run), or 64 for a model that does not fit this machine's memory
/// (a usage error, as in `train`).
func exitingOnError<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ValidationError {
        printError(error.message)
        throw ExitCode.failure
    } catch let error as TrainingError {
        printError("\(error)")
        if case .modelConfig = error { throw ExitCode.validationFailure }
        throw ExitCode.failure
    } catch {
        printError("\(error)")
        throw ExitCode.failure
    }
}

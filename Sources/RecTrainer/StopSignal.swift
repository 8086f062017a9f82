import Foundation
import Synchronization

/// The signal that asked the run to stop (SIGTERM from Slurm's time limit or `scancel`, SIGINT
/// from Ctrl-C, SIGUSR1 or SIGUSR2 forwarded by mpirun, which launch.sh sends on SIGTERM and
/// SIGINT because mpirun itself turns those into a kill of the ranks), or 0. Set from the signal
/// handler, read once per step.
let pendingStopSignal = Atomic<Int32>(0)

/// Catches SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 so the run can stop at the next step boundary, after rank 0 has
/// written a checkpoint. A second signal of the same kind ends the process at once.
enum StopSignal {
    static func install() {
        // A parent may have left these blocked (test runners do); a blocked stop signal would
        // never arrive.
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGTERM, SIGINT, SIGUSR1, SIGUSR2] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGTERM, SIGINT, SIGUSR1, SIGUSR2] {
            signal(sig) { received in
                pendingStopSignal.store(received, ordering: .relaxed)
                signal(received, SIG_DFL)   // a second one stops immediately
            }
        }
    }

    /// The signal received so far, or 0.
    static var pending: Int32 { pendingStopSignal.load(ordering: .relaxed) }

    /// How a stop signal is named to the user: under launch.sh (which sets
    /// REC_DIST_SIGNAL_RELAY), SIGUSR1 and SIGUSR2 stand for the SIGTERM and SIGINT it received.
    static func name(_ signal: Int32, relay: String? = ProcessInfo.processInfo.environment["REC_DIST_SIGNAL_RELAY"]) -> String {
        switch signal {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGUSR1: return relay.map { "SIGTERM (relayed by \($0) as SIGUSR1)" } ?? "SIGUSR1"
        case SIGUSR2: return relay.map { "SIGINT (relayed by \($0) as SIGUSR2)" } ?? "SIGUSR2"
        default: return "signal \(signal)"
        }
    }

    /// Forgets a received signal (tests run several trainings in one process).
    static func reset() { pendingStopSignal.store(0, ordering: .relaxed) }
}

import ArgumentParser
import RecMPI
import RecTrainer

/// Starting and ending the MPI job that `train` and `bench` run in.
enum MPIJob {
    /// This process's place in the job (one rank without mpirun), or a failure that says what to install.
    static func start(collectiveTimeout: Double? = nil) throws -> MPICommunicator {
        do {
            return try MPICommunicator(collectiveTimeout: collectiveTimeout)
        } catch {
            printError("cannot start MPI: \(error). Is Open MPI installed (./launch.sh setup)?")
            throw ExitCode.failure
        }
    }

    /// Ends the job after a failure on this rank alone (the others may be waiting in a
    /// collective): prints it, aborts the other ranks, and returns the exit status. A model
    /// configuration that cannot be read or does not fit the data is a usage error, like a
    /// rejected flag; anything else is a failed run.
    static func failedAlone(_ error: any Error, communicator: MPICommunicator) -> ExitCode {
        printError("\(error)", rank: communicator.rank)
        var code: Int32 = 1
        if error is ValidationError { code = ExitCode.validationFailure.rawValue }
        if case TrainingError.modelConfig = error { code = ExitCode.validationFailure.rawValue }
        if communicator.size > 1 { communicator.abort(code: code) }
        communicator.finalize()
        return ExitCode(code)
    }
}

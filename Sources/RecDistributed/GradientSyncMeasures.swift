/// What a `GradientSync` step moved and where its communication time went, for the benchmark's
/// and the trainer's step-time breakdown.
extension GradientSync {
    /// What the last step moved, in bytes this rank contributed (`sent`) and collected
    /// (`received`) as collective payloads, not counting the transport's own copies.
    public struct Traffic: Sendable, Equatable, Codable {
        /// The dense gradient allreduce: 4 x denseCount (sent, and received back summed).
        public var denseBytes = 0
        /// The embedding exchange's payload this rank sent.
        public var embeddingSentBytes = 0
        /// The embedding exchange's payload this rank received (all ranks' blocks, its own included).
        public var embeddingReceivedBytes = 0
        /// Rows this rank sent (its distinct rows with `localSums`, else all its pairs); on one
        /// rank, its distinct rows.
        public var localRows = 0
        /// Distinct rows touched by any rank.
        public var globalRows = 0
    }

    /// Where the step's communication time went, in nanoseconds, accumulated over steps.
    public struct Timing: Sendable, Equatable {
        /// Time the caller spent inside this object's methods: starting collectives, packing,
        /// merging, and waiting for collectives to complete. The exposed communication.
        public var exposed: UInt64 = 0
        /// Time collectives were in flight while the caller computed (from their start until a
        /// progress call saw them complete or the final wait began): hidden communication.
        public var hidden: UInt64 = 0
        /// Of `exposed`, the time blocked in waits (the counts' wait in `startPairs`, and the final
        /// waits in `finish`).
        public var waiting: UInt64 = 0
        /// Of `exposed`, summing the rank's own pairs per distinct row (`.rows` with local sums,
        /// `.local`), or scattering them into the dense buffer (`.dense`).
        public var coalescing: UInt64 = 0
        /// Of `exposed`, inside the calls that start collectives (MPI_Iallreduce, MPI_Iallgatherv).
        public var starting: UInt64 = 0
        /// Of `exposed`, inside the progress calls (MPI_Test) between pieces of computation.
        public var testing: UInt64 = 0
        /// Of `exposed`, summing the received rows per distinct row (or extracting them from the
        /// dense buffer).
        public var merging: UInt64 = 0
        /// Of `waiting`, the wait for the other ranks' row counts before the rows' allgatherv
        /// can start (mostly the ranks' imbalance at that point of the backward pass).
        public var countsWaiting: UInt64 = 0
    }
}

import ArgumentParser

/// Whom `recommend` recommends to: one user, the users listed in a file, or every user.
struct RecommendTargetOptions: ParsableArguments {
    @Option(help: "The user: its id in the input files (MovieLens user id), or #ID for a prepared id.")
    var user: String?
    @Option(help: "A file with one user per line: write the top K of each to --out.")
    var users: String?
    @Flag(help: "Every user of the training split: write the top K of each to --out.")
    var allUsers = false

    func validate() throws {
        let modes = (user != nil ? 1 : 0) + (users != nil ? 1 : 0) + (allUsers ? 1 : 0)
        if modes != 1 { throw ValidationError("give exactly one of --user U, --users FILE or --all-users.") }
    }

    /// Whether the top K go to a file (--users, --all-users) rather than the terminal.
    var manyUsers: Bool { users != nil || allUsers }
}

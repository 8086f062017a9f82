import Foundation

/// A directory that appears whole or not at all: its files are written into a hidden temporary
/// sibling (`.NAME.TAG-PID`), which `commit()` fsyncs and renames into place, replacing an older
/// directory of that name only once the new one is complete. A crash, a full disk or an
/// `abandon()` leaves the previous directory untouched. Prepared datasets and checkpoints are
/// written this way. The temporary and the files named through `file(_:)` are removed also when
/// an input shrinks under its mapping (`MappingGuard`'s exit 74).
public final class AtomicDirectory {
    /// Where the directory appears on `commit()`.
    public let path: String
    /// The hidden sibling the files are written into.
    public let temporary: String
    private var finished = false
    /// `MappingGuard.removeOnExit` slots of the temporary and of its files, by path.
    private var cleanupSlots: [String: Int] = [:]
    private let lock = NSLock()

    /// Creates the temporary directory (and `path`'s parent if needed); `tag` names what is being
    /// written in the temporary's name.
    public init(path: String, tag: String = "tmp") throws(DataError) {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        self.path = url.path
        let parent = url.deletingLastPathComponent().path
        temporary = (parent as NSString).appendingPathComponent(".\(url.lastPathComponent).\(tag)-\(getpid())")
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw DataError(file: path, message: "cannot create the parent directory '\(parent)': \(error.localizedDescription)")
        }
        try? FileManager.default.removeItem(atPath: temporary)
        guard mkdir(temporary, 0o755) == 0 else {
            throw DataError(file: path, message: "cannot create '\(temporary)': \(DataError.systemMessage(errno))",
                            hint: "check that the directory is writable")
        }
        cleanupSlots[temporary] = MappingGuard.removeOnExit(temporary)
    }

    deinit { abandon() }

    /// Removes temporary directories of earlier writes of `path` with `tag` whose process is gone
    /// (on this host: use it only where one host writes `path`).
    public static func removeStale(path: String, tag: String) {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        let prefix = ".\(url.lastPathComponent).\(tag)-"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix(prefix) {
            guard let pid = Int32(entry.dropFirst(prefix.count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                try? FileManager.default.removeItem(atPath: (parent as NSString).appendingPathComponent(entry))
            }
        }
    }

    /// A path inside the temporary directory.
    public func file(_ name: String) -> String {
        let path = (temporary as NSString).appendingPathComponent(name)
        lock.withLock {
            if !finished && cleanupSlots.index(forKey: path) == nil { cleanupSlots[path] = MappingGuard.removeOnExit(path) }
        }
        return path
    }

    /// Stops removing the temporary's paths on exit (committed or abandoned).
    private func releaseCleanup() {
        lock.withLock {
            for case let slot? in cleanupSlots.values { MappingGuard.keep(slot) }
            cleanupSlots = [:]
        }
    }

    /// Moves the finished directory into place: fsyncs it, moves an older `path` aside, renames,
    /// removes the older one and fsyncs the parent. If the rename fails the older one is put back.
    public func commit() throws(DataError) {
        let fm = FileManager.default
        syncPath(temporary)
        var old: String?
        if fm.fileExists(atPath: path) {
            let parent = (path as NSString).deletingLastPathComponent
            let aside = (parent as NSString).appendingPathComponent(".\((path as NSString).lastPathComponent).old-\(getpid())")
            try? fm.removeItem(atPath: aside)
            guard rename(path, aside) == 0 else {
                throw DataError(file: path, message: "cannot move the old directory aside: \(DataError.systemMessage(errno))")
            }
            old = aside
        }
        guard rename(temporary, path) == 0 else {
            let message = DataError.systemMessage(errno)
            if let old { _ = rename(old, path) }
            throw DataError(file: path, message: "cannot rename '\(temporary)' into place: \(message)")
        }
        finished = true
        releaseCleanup()
        if let old { try? fm.removeItem(atPath: old) }
        syncPath((path as NSString).deletingLastPathComponent)
    }

    /// Removes the temporary directory (nothing, once committed).
    public func abandon() {
        guard !finished else { return }
        finished = true
        try? FileManager.default.removeItem(atPath: temporary)
        releaseCleanup()
    }
}

/// A small file replaced atomically: written to `PATH.tmp-PID`, fsynced, renamed over `path`,
/// then the directory fsynced.
public func replaceFile(at path: String, with bytes: [UInt8]) throws(DataError) {
    let temporary = "\(path).tmp-\(getpid())"
    do throws(DataError) {
        let file = try OutputFile(path: temporary)
        try file.write(bytes)
        try file.close()
    } catch {
        unlink(temporary)
        var named = error   // the path the user asked for, not the temporary's
        named.file = path
        throw named
    }
    guard rename(temporary, path) == 0 else {
        let code = errno
        unlink(temporary)
        throw DataError(file: path, message: "cannot rename '\(temporary)' to '\(path)': \(DataError.systemMessage(code))")
    }
    syncPath((path as NSString).deletingLastPathComponent)
}

/// fsyncs a file or directory, ignoring failures (for directories after a rename: best effort).
public func syncPath(_ path: String) {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return }
    _ = fsync(fd)
    close(fd)
}

/// Files that appear together or not at all (an export's weights and description): each is
/// written to a hidden temporary beside its path (`.NAME.tmp-PID`), and `commit()` renames them
/// all into place once every one is complete. Until then, and after a failure (a full disk),
/// files already at those paths are untouched and the temporaries are removed.
public final class StagedFiles {
    private var staged: [(temporary: String, path: String)] = []

    public init() {}

    deinit { abandon() }

    /// Writes `bytes` as the future contents of `path`.
    public func stage(_ path: String, _ bytes: UnsafeRawBufferPointer) throws(DataError) {
        try stage(path) { (file) throws(DataError) in try file.write(bytes) }
    }

    /// Writes the future contents of `path` through `body`, a part at a time.
    public func stage(_ path: String, writing body: (OutputFile) throws(DataError) -> Void) throws(DataError) {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
        staged.append((temporary, path))
        do throws(DataError) {
            let file = try OutputFile(path: temporary)
            try body(file)
            try file.close()
        } catch {
            var named = error   // the path the user asked for, not the temporary's
            named.file = path
            throw named
        }
    }

    /// Writes `bytes` as the future contents of `path`.
    public func stage(_ path: String, _ bytes: [UInt8]) throws(DataError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(DataError) in try stage(path, raw) } }
        try result.get()
    }

    /// Renames every staged file into place.
    public func commit() throws(DataError) {
        for (temporary, path) in staged {
            guard rename(temporary, path) == 0 else {
                throw DataError(file: path, message: "cannot rename '\(temporary)' to '\(path)': \(DataError.systemMessage(errno))")
            }
        }
        for directory in Set(staged.map { ($0.path as NSString).deletingLastPathComponent }) { syncPath(directory.isEmpty ? "." : directory) }
        staged = []
    }

    /// Removes the temporaries not yet committed.
    public func abandon() {
        for (temporary, _) in staged { unlink(temporary) }
        staged = []
    }
}

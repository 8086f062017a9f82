#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file, read-only, in memory: memory-mapped, or read into a buffer when the file
/// cannot be mapped (for example on some network or special file systems).
///
/// The bytes stay valid for the lifetime of the object. An empty file opens fine and has an
/// empty `bytes`; deciding whether that is acceptable is up to the reader of the format.
///
/// The contents are never written through this object, so sharing it between threads is safe.
/// If another process truncates the file underneath a mapping, reading past the new end stops
/// the process with an error naming the file and status 74 (`MappingGuard`), not a crash.
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened with, as given; used in error messages.
    public let path: String
    /// The file's contents.
    public let bytes: UnsafeRawBufferPointer
    /// True when `bytes` is a memory mapping, false when the file was read into a heap buffer.
    public let isMapped: Bool
    /// The mapping's slot in `MappingGuard`, which turns a SIGBUS from reading past the end of
    /// a file truncated underneath the mapping into an error naming the file.
    private var guardSlot: Int?

    /// Opens and maps (or reads) the file at `path`.
    ///
    /// This is where rec-dist opens every input file for reading, so it is where non-regular
    /// files are refused: the file is opened non-blocking (opening a FIFO would otherwise wait
    /// for a writer forever) and checked with `fstat` before any byte is read, so a FIFO, a
    /// device such as `/dev/zero`, a socket or a directory is refused at once, by name.
    ///
    /// - Throws: `DataError` when the file does not exist, cannot be read, is a directory or is
    ///   not a regular file, or reading it fails.
    public init(path: String) throws(DataError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let code = errno
            if code == ENOENT && path.unicodeScalars.contains("\u{FFFD}") {
                throw DataError(file: path, message: "cannot open '\(path)': the path holds bytes that are not UTF-8 (shown as \u{FFFD}), which rec-dist cannot pass on to the file system",
                                hint: "rename the file (or the directory holding it) to a UTF-8 name, e.g. with `convmv -f latin1 -t utf8`")
            }
            throw DataError(file: path, message: "cannot open '\(path)': \(DataError.systemMessage(code))",
                            hint: code == ENOENT ? "check the path; relative paths are resolved from the current directory"
                                                 : "check the file's permissions")
        }
        defer { close(fd) }

        var info = stat()
        if fstat(fd, &info) != 0 {
            let code = errno
            throw DataError(file: path, message: "cannot stat '\(path)': \(DataError.systemMessage(code))")
        }
        let kind = info.st_mode & S_IFMT
        if kind == S_IFDIR {
            throw DataError(file: path, message: "cannot open '\(path)': it is a directory",
                            hint: "pass the path of a data file, not of the folder that holds it")
        }
        if kind != S_IFREG {
            let what = kind == S_IFIFO ? "a FIFO (named pipe)" : kind == S_IFCHR || kind == S_IFBLK ? "a device" : kind == S_IFSOCK ? "a socket" : "a special file"
            throw DataError(file: path, message: "cannot read '\(path)': it is \(what), not a regular file",
                            hint: "input must be a regular file: rec-dist reads files more than once and by offset, so write the stream to a file first")
        }
        // Reads from here on block normally (the flag only matters for FIFOs and devices).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            isMapped = false
            return
        }

        if let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
           address != UnsafeMutableRawPointer(bitPattern: -1) {
            #if os(Linux)
            _ = madvise(address, size, MADV_SEQUENTIAL)
            #endif
            address.bindMemory(to: UInt8.self, capacity: size)
            bytes = UnsafeRawBufferPointer(start: address, count: size)
            isMapped = true
            guardSlot = MappingGuard.register(base: address, count: size, path: path)
            return
        }

        // mmap failed: read the file into a heap buffer instead.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        var done = 0
        while done < size {
            let n = read(fd, buffer + done, size - done)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                buffer.deallocate()
                throw DataError(file: path, message: "cannot read '\(path)': \(DataError.systemMessage(code))")
            }
            if n == 0 {
                buffer.deallocate()
                throw DataError(file: path, message: "'\(path)' shrank while being read (expected \(size) bytes, got \(done))",
                                hint: "is another process writing the file?")
            }
            done += n
        }
        buffer.bindMemory(to: UInt8.self, capacity: size)
        bytes = UnsafeRawBufferPointer(start: buffer, count: size)
        isMapped = false
    }

    /// The whole contents of the small file at `path` (a manifest, a schema, a configuration),
    /// with the same checks as `init(path:)`.
    public static func contents(of path: String) throws(DataError) -> [UInt8] {
        let file = try MappedFile(path: path)
        return withExtendedLifetime(file) { Array(file.bytes) }   // copy before the unmapping
    }

    /// Drops the pages of `range` (bytes) from the process's resident set, if the file is mapped;
    /// reading them again is a page-cache hit. The range is shrunk to whole pages.
    public func releasePages(_ range: Range<Int>) {
        #if os(Linux)
        guard isMapped, let base = bytes.baseAddress else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page
        let end = range.upperBound / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED) }
        #endif
    }

    deinit {
        guard let base = bytes.baseAddress else { return }
        if isMapped {
            if let guardSlot { MappingGuard.unregister(guardSlot) }
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        } else {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        }
    }
}

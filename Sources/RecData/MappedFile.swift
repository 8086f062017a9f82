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
/// The contents are never written through this object, so sharing it between threads is safe
/// (as long as no one else truncates the file underneath a mapping, which is true of any mmap).
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened with, as given; used in error messages.
    public let path: String
    /// The file's contents.
    public let bytes: UnsafeRawBufferPointer
    /// True when `bytes` is a memory mapping, false when the file was read into a heap buffer.
    public let isMapped: Bool

    /// Opens and maps (or reads) the file at `path`.
    ///
    /// - Throws: `DataError` when the file does not exist, cannot be read, is a directory or is
    ///   not a regular file, or reading it fails.
    public init(path: String) throws(DataError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
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
            throw DataError(file: path, message: "cannot open '\(path)': not a regular file",
                            hint: "data must come from a regular file (pipes and devices cannot be mapped)")
        }
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
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        } else {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        }
    }
}

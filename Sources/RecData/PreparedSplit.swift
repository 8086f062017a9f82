import Foundation

/// The binary file of one split of a prepared dataset (`train.rdp`, `valid.rdp`, `test.rdp`),
/// written by `rec-dist prepare` and memory-mapped by every rank.
///
/// Columnar in row groups (as Parquet): the rows are cut into groups of `rowsPerGroup` rows (the
/// last group may be shorter), and inside a group each kind of column is contiguous, so a row is
/// found with arithmetic alone and a group is the unit that is checksummed and verified:
///
/// ```
/// [0, 4096)                          header (below)
/// group g at 4096 + g * groupStride, with r = its row count:
///     labels       Float32 x r
///     dense        Float32 x r x denseCount         row-major inside the group
///     categorical  UInt32  x r x categoricalCount   row-major inside the group; ids < vocabulary size
/// checksums        UInt64 x groupCount               XXH64 of each group's bytes
/// ```
///
/// `groupStride = rowsPerGroup * 4 * (1 + denseCount + categoricalCount)`.
/// The header (little-endian): magic `RECDPREP` (8 bytes), version u32, header size u32, rows u64,
/// dense count u32, categorical count u32, rows per group u32, group count u32, offset of the
/// checksum table u64, file size u64, schema hash u64 (ties the file to its `manifest.json`),
/// split name (16 bytes, ASCII, zero-padded), zeros, and at byte 4088 the XXH64 of bytes
/// `0..<4088` followed by the checksum table.
///
/// The header is written last: a file whose writing stopped half-way has no valid header.
public enum PreparedSplitFormat {
    /// The first 8 bytes of every split file.
    public static let magic: [UInt8] = Array("RECDPREP".utf8)
    /// The version this code writes and reads.
    public static let version: UInt32 = 1
    /// Bytes before the first row group.
    public static let headerSize = 4096
    /// Rows per group unless told otherwise: 64 Ki rows, about 10 MB for Criteo's 40 columns.
    public static let defaultRowsPerGroup = 65_536

    static let headerChecksumOffset = 4088
}

/// The fields of a split file's header.
public struct PreparedSplitHeader: Sendable, Equatable {
    public var rows: Int
    public var denseCount: Int
    public var categoricalCount: Int
    public var rowsPerGroup: Int
    public var schemaHash: UInt64
    public var split: String

    /// Bytes of one row across its columns.
    public var rowBytes: Int { 4 * (1 + denseCount + categoricalCount) }
    /// Number of row groups.
    public var groupCount: Int { (rows + rowsPerGroup - 1) / rowsPerGroup }
    /// Bytes between the starts of consecutive groups.
    public var groupStride: Int { rowsPerGroup * rowBytes }
    /// Rows in group `g`.
    public func rows(inGroup g: Int) -> Int { min(rowsPerGroup, rows - g * rowsPerGroup) }
    /// Where the checksum table starts.
    public var checksumOffset: Int {
        PreparedSplitFormat.headerSize + (groupCount == 0 ? 0 : (groupCount - 1) * groupStride + rows(inGroup: groupCount - 1) * rowBytes)
    }
    /// The size of a complete file.
    public var fileSize: Int { checksumOffset + 8 * groupCount }
}

/// Writes one split file: rows are appended one at a time (or in runs), buffered one row group at
/// a time, and each full group is checksummed and handed to a background thread that writes it
/// (so parsing and disk writes overlap; the thread also starts the write-back every 64 MB, so the
/// final fsync has little left to do). `finish()` writes the checksum table and then the header;
/// until then the file has no valid header.
public final class PreparedSplitWriter {
    public let path: String
    public private(set) var header: PreparedSplitHeader
    private let fd: Int32
    private let io: BackgroundWriter
    private var group: UnsafeMutableRawPointer   // (rowsPerGroup) labels, then dense, then categorical
    private var inGroup = 0
    private var checksums: [UInt64] = []
    private var written = 0
    private var finished = false

    /// Creates (truncating) `path` for a split with these widths.
    public init(path: String, denseCount: Int, categoricalCount: Int, schemaHash: UInt64, split: String,
                rowsPerGroup: Int = PreparedSplitFormat.defaultRowsPerGroup) throws(DataError) {
        precondition(rowsPerGroup >= 1 && denseCount >= 0 && categoricalCount >= 0)
        precondition(split.utf8.count <= 16, "split name '\(split)' is longer than 16 bytes")
        self.path = path
        header = PreparedSplitHeader(rows: 0, denseCount: denseCount, categoricalCount: categoricalCount,
                                     rowsPerGroup: rowsPerGroup, schemaHash: schemaHash, split: split)
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            let code = errno
            throw DataError(file: path, message: "cannot create: \(DataError.systemMessage(code))",
                            hint: "check that the output directory is writable")
        }
        io = BackgroundWriter(fd: fd, path: path, bufferBytes: rowsPerGroup * header.rowBytes)
        group = io.takeBuffer()
        // Reserve the header: zeros until finish() writes it.
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: PreparedSplitFormat.headerSize, alignment: 64)
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: PreparedSplitFormat.headerSize)
        defer { zeros.deallocate() }
        try io.writeNow(UnsafeRawBufferPointer(start: zeros, count: PreparedSplitFormat.headerSize))
        written = PreparedSplitFormat.headerSize
    }

    deinit {
        io.stop()
        io.returnBuffer(group)
        if !finished { close(fd) }
    }

    private var labels: UnsafeMutablePointer<Float> { group.assumingMemoryBound(to: Float.self) }
    private var dense: UnsafeMutablePointer<Float> {
        (group + 4 * header.rowsPerGroup).assumingMemoryBound(to: Float.self)
    }
    private var categorical: UnsafeMutablePointer<UInt32> {
        (group + 4 * header.rowsPerGroup * (1 + header.denseCount)).assumingMemoryBound(to: UInt32.self)
    }

    /// Appends `count` rows from columnar arrays: labels (count), dense (count, denseCount),
    /// categorical (count, categoricalCount).
    public func append(count: Int, labels: UnsafePointer<Float>, dense: UnsafePointer<Float>?,
                       categorical: UnsafePointer<UInt32>?) throws(DataError) {
        let d = header.denseCount, c = header.categoricalCount, r = header.rowsPerGroup
        var done = 0
        while done < count {
            let n = min(count - done, r - inGroup)
            (self.labels + inGroup).update(from: labels + done, count: n)
            if d > 0, let dense { (self.dense + inGroup * d).update(from: dense + done * d, count: n * d) }
            if c > 0, let categorical { (self.categorical + inGroup * c).update(from: categorical + done * c, count: n * c) }
            inGroup += n
            done += n
            header.rows += n
            if inGroup == r { try flushGroup() }
        }
    }

    /// Appends one row: its label, `denseCount` dense values and `categoricalCount` ids.
    @inline(__always)
    public func append(label: Float, dense: UnsafePointer<Float>?, categorical: UnsafePointer<UInt32>?) throws(DataError) {
        let d = header.denseCount, c = header.categoricalCount
        labels[inGroup] = label
        if d > 0, let dense { (self.dense + inGroup * d).update(from: dense, count: d) }
        if c > 0, let categorical { (self.categorical + inGroup * c).update(from: categorical, count: c) }
        inGroup += 1
        header.rows += 1
        if inGroup == header.rowsPerGroup { try flushGroup() }
    }

    private func flushGroup() throws(DataError) {
        guard inGroup > 0 else { return }
        let d = header.denseCount, c = header.categoricalCount, r = header.rowsPerGroup, n = inGroup
        // Compact a short last group: its columns follow each other with its own row count.
        if n < r {
            let denseBytes = n * d * 4, categoricalBytes = n * c * 4
            memmove(group + 4 * n, group + 4 * r, denseBytes)
            memmove(group + 4 * n * (1 + d), group + 4 * r * (1 + d), categoricalBytes)
        }
        let bytes = n * header.rowBytes
        checksums.append(XXH64.hash(UnsafeRawBufferPointer(start: group, count: bytes)))
        try io.submit(group, count: bytes)
        written += bytes
        group = io.takeBuffer()
        inGroup = 0
    }

    /// Writes the last group, the checksum table and the header, and closes the file (fsynced).
    /// Returns the header written.
    @discardableResult
    public func finish() throws(DataError) -> PreparedSplitHeader {
        precondition(!finished, "finish() called twice")
        try flushGroup()
        try io.drain()
        precondition(written == header.checksumOffset)
        var table: [UInt8] = []
        table.reserveCapacity(8 * checksums.count)
        for c in checksums { withUnsafeBytes(of: c.littleEndian) { table.append(contentsOf: $0) } }
        try table.withUnsafeBytes { (t: UnsafeRawBufferPointer) -> Result<Void, DataError> in
            do throws(DataError) { try io.writeNow(t) } catch { return .failure(error) }
            return .success(())
        }.get()
        let bytes = PreparedSplitReader.encodeHeader(header, checksums: checksums)
        let result = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        if result != bytes.count {
            throw DataError(file: path, message: "cannot write the header: \(DataError.systemMessage(errno))")
        }
        finished = true
        if fsync(fd) != 0 || close(fd) != 0 {
            throw DataError(file: path, message: "cannot flush the file to disk: \(DataError.systemMessage(errno))",
                            hint: "is the disk full?")
        }
        return header
    }
}

/// A split file opened for reading: memory-mapped, header and size checked on open; row groups
/// are verified against their checksums on request (`verify(groups:)`).
///
/// Reading a row touches only the pages that hold it, so a rank that reads a part of the rows
/// maps the whole file but brings only those pages into memory; `releaseResidentPages()` drops
/// them from the process again (they stay in the page cache), which bounds the resident size.
public final class PreparedSplitReader: @unchecked Sendable {
    public let path: String
    public let header: PreparedSplitHeader
    let file: MappedFile
    let base: UnsafeRawPointer
    let checksums: [UInt64]

    /// What to tell the user when a file is damaged.
    static let rerun = "re-run `rec-dist prepare` (with --force to replace the damaged dataset)"

    /// Opens `path` and checks its header, its size and, when given, its schema hash.
    public init(path: String, expectedSchemaHash: UInt64? = nil) throws(DataError) {
        self.path = path
        file = try MappedFile(path: path)
        let bytes = file.bytes
        guard bytes.count >= PreparedSplitFormat.headerSize, let start = bytes.baseAddress else {
            throw DataError(file: path, message: "truncated: \(bytes.count) bytes, shorter than the \(PreparedSplitFormat.headerSize)-byte header",
                            hint: Self.rerun)
        }
        base = start
        guard Array(UnsafeRawBufferPointer(start: start, count: 8)) == PreparedSplitFormat.magic else {
            let zero = UnsafeRawBufferPointer(start: start, count: 8).allSatisfy { $0 == 0 }
            throw DataError(file: path, message: zero ? "no header: the file was not completely written (an interrupted prepare?)"
                                                      : "not a rec-dist prepared split (wrong magic number)",
                            hint: Self.rerun)
        }
        func u32(_ offset: Int) -> Int { Int(UInt32(littleEndian: start.loadUnaligned(fromByteOffset: offset, as: UInt32.self))) }
        func u64(_ offset: Int) -> UInt64 { UInt64(littleEndian: start.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
        let version = UInt32(u32(8))
        guard version == PreparedSplitFormat.version else {
            throw DataError(file: path, message: "format version \(version); this rec-dist reads version \(PreparedSplitFormat.version)",
                            hint: version > PreparedSplitFormat.version ? "use the rec-dist that prepared it, or re-run `rec-dist prepare` with this one"
                                                                        : Self.rerun)
        }
        guard u32(12) == PreparedSplitFormat.headerSize else {
            throw DataError(file: path, message: "unexpected header size \(u32(12))", hint: Self.rerun)
        }
        // The header's checksum can only be checked once the sizes are known, so a damaged header
        // is read first: every count is bounded before the sizes are computed from it (a flipped
        // high bit must be an error naming the file, not an arithmetic overflow).
        let rows = u64(16), rowsPerGroup = u32(32), denseCount = u32(24), categoricalCount = u32(28)
        let rowBytes = 4 * (1 + denseCount + categoricalCount)
        let dataBytes = Int(rows & (1 << 48 - 1)).multipliedReportingOverflow(by: rowBytes)
        guard rows < 1 << 48, rowsPerGroup >= 1, denseCount < 1 << 24, categoricalCount < 1 << 24,
              !dataBytes.overflow, dataBytes.partialValue < 1 << 60 else {
            throw DataError(file: path, message: "inconsistent header (rows \(rows), \(denseCount) + \(categoricalCount) fields)",
                            hint: Self.rerun)
        }
        let nameBytes = UnsafeRawBufferPointer(start: start + 64, count: 16).prefix { $0 != 0 }
        let header = PreparedSplitHeader(rows: Int(rows), denseCount: denseCount, categoricalCount: categoricalCount,
                                         rowsPerGroup: rowsPerGroup, schemaHash: u64(56),
                                         split: String(decoding: nameBytes, as: UTF8.self))
        guard u32(36) == header.groupCount, u64(40) == UInt64(header.checksumOffset), u64(48) == UInt64(header.fileSize) else {
            throw DataError(file: path, message: "inconsistent header (rows \(header.rows), \(u32(36)) groups of \(header.rowsPerGroup))",
                            hint: Self.rerun)
        }
        guard bytes.count == header.fileSize else {
            throw DataError(file: path,
                            message: bytes.count < header.fileSize
                                ? "truncated: \(bytes.count) bytes, the header says \(header.fileSize)"
                                : "\(bytes.count - header.fileSize) unexpected bytes after the end (\(bytes.count) bytes, the header says \(header.fileSize))",
                            hint: Self.rerun)
        }
        var table = [UInt64](repeating: 0, count: header.groupCount)
        table.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: start + header.checksumOffset, count: 8 * header.groupCount)) }
        for i in table.indices { table[i] = UInt64(littleEndian: table[i]) }
        let expected = Self.headerChecksum(UnsafeRawBufferPointer(start: start, count: PreparedSplitFormat.headerChecksumOffset), checksums: table)
        guard expected == u64(PreparedSplitFormat.headerChecksumOffset) else {
            throw DataError(file: path, message: "the header or the checksum table is corrupted (checksum mismatch)", hint: Self.rerun)
        }
        if let expectedSchemaHash, header.schemaHash != expectedSchemaHash {
            throw DataError(file: path, message: "belongs to another prepared dataset (schema hash \(hex64(header.schemaHash)), manifest.json says \(hex64(expectedSchemaHash)))",
                            hint: "do not mix files of different prepared datasets; " + Self.rerun)
        }
        self.header = header
        checksums = table
        #if os(Linux)
        _ = madvise(UnsafeMutableRawPointer(mutating: start), bytes.count, MADV_RANDOM)
        #endif
    }

    /// Checks the row groups `groups` against their checksums, dropping the pages it read every
    /// `releaseEvery` bytes (so verifying does not grow the resident size either).
    ///
    /// - Throws: `DataError` naming the first damaged group and its rows.
    public func verify<S: Sequence<Int>>(groups: S, releaseEvery: Int = 64 << 20) throws(DataError) {
        var sinceRelease = 0
        defer { releaseResidentPages() }
        for g in groups {
            precondition(g >= 0 && g < header.groupCount)
            let n = header.rows(inGroup: g)
            let bytes = UnsafeRawBufferPointer(start: base + PreparedSplitFormat.headerSize + g * header.groupStride,
                                               count: n * header.rowBytes)
            sinceRelease += bytes.count
            if sinceRelease >= releaseEvery {
                sinceRelease = 0
                releaseResidentPages()
            }
            if XXH64.hash(bytes) != checksums[g] {
                throw DataError(file: path, message: "row group \(g) (rows \(g * header.rowsPerGroup)..<\(g * header.rowsPerGroup + n)) is corrupted (checksum mismatch)",
                                hint: Self.rerun)
            }
        }
    }

    /// Checks every row group.
    public func verifyAll(releaseEvery: Int = 64 << 20) throws(DataError) {
        try verify(groups: 0..<header.groupCount, releaseEvery: releaseEvery)
    }

    /// Where row `row`'s group starts, the row's index in it, and the group's row count.
    @inline(__always)
    func locate(_ row: Int) -> (group: UnsafeRawPointer, index: Int, count: Int) {
        let g = row / header.rowsPerGroup
        let start = base + PreparedSplitFormat.headerSize + g * header.groupStride
        return (start, row - g * header.rowsPerGroup, min(header.rowsPerGroup, header.rows - g * header.rowsPerGroup))
    }

    /// Row `row`'s label.
    @inline(__always)
    public func label(_ row: Int) -> Float {
        let (g, i, _) = locate(row)
        return g.load(fromByteOffset: 4 * i, as: Float.self)
    }

    /// Row `row`'s dense values: `denseCount` floats.
    @inline(__always)
    public func dense(_ row: Int) -> UnsafePointer<Float> {
        let (g, i, n) = locate(row)
        return (g + 4 * n + 4 * i * header.denseCount).assumingMemoryBound(to: Float.self)
    }

    /// Row `row`'s categorical ids: `categoricalCount` values.
    @inline(__always)
    public func categorical(_ row: Int) -> UnsafePointer<UInt32> {
        let (g, i, n) = locate(row)
        return (g + 4 * n * (1 + header.denseCount) + 4 * i * header.categoricalCount).assumingMemoryBound(to: UInt32.self)
    }

    /// Copies row `row` to `out`'s row `slot`.
    @inline(__always)
    public func copyRow(_ row: Int, to out: FeatureRowsBuffer, slot: Int) {
        let (g, i, n) = locate(row)
        let d = header.denseCount, c = header.categoricalCount
        out.labels[slot] = g.load(fromByteOffset: 4 * i, as: Float.self)
        if d > 0 {
            (out.dense + slot * d).update(from: (g + 4 * n + 4 * i * d).assumingMemoryBound(to: Float.self), count: d)
        }
        if c > 0 {
            (out.categorical + slot * c).update(from: (g + 4 * n * (1 + d) + 4 * i * c).assumingMemoryBound(to: UInt32.self), count: c)
        }
    }

    /// Copies row `row` to `out`'s row `slot` with three `pread`s on `descriptor` (a descriptor of
    /// this file) instead of through the mapping: for rows read at random from a split larger than
    /// the resident budget, where each page fault would map far more than the row (fault-around,
    /// large page-cache folios) only to be dropped again. Returns false if a read failed.
    @inline(__always)
    public func readRow(_ row: Int, to out: FeatureRowsBuffer, slot: Int, descriptor: Int32) -> Bool {
        let g = row / header.rowsPerGroup, i = row - g * header.rowsPerGroup
        let n = min(header.rowsPerGroup, header.rows - g * header.rowsPerGroup)
        let d = header.denseCount, c = header.categoricalCount
        let start = off_t(PreparedSplitFormat.headerSize + g * header.groupStride)
        var ok = pread(descriptor, out.labels + slot, 4, start + off_t(4 * i)) == 4
        if d > 0 {
            ok = ok && pread(descriptor, out.dense + slot * d, 4 * d, start + off_t(4 * n + 4 * i * d)) == 4 * d
        }
        if c > 0 {
            ok = ok && pread(descriptor, out.categorical + slot * c, 4 * c, start + off_t(4 * n * (1 + d) + 4 * i * c)) == 4 * c
        }
        return ok
    }

    /// The size of the file in bytes.
    public var byteCount: Int { file.bytes.count }

    /// Drops this file's pages from the process's resident set (they stay in the page cache, so
    /// reading them again is a minor fault, not a disk read).
    public func releaseResidentPages() {
        #if os(Linux)
        _ = madvise(UnsafeMutableRawPointer(mutating: base), file.bytes.count, MADV_DONTNEED)
        #endif
    }

    static func headerChecksum(_ fields: UnsafeRawBufferPointer, checksums: [UInt64]) -> UInt64 {
        var bytes = Array(fields)
        for c in checksums { withUnsafeBytes(of: c.littleEndian) { bytes.append(contentsOf: $0) } }
        return XXH64.hash(bytes)
    }

    /// The 4096 header bytes for `header`.
    static func encodeHeader(_ header: PreparedSplitHeader, checksums: [UInt64]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: PreparedSplitFormat.headerSize)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { raw in
                for (k, b) in raw.enumerated() { bytes[offset + k] = b }
            }
        }
        for (k, b) in PreparedSplitFormat.magic.enumerated() { bytes[k] = b }
        put(PreparedSplitFormat.version, at: 8)
        put(UInt32(PreparedSplitFormat.headerSize), at: 12)
        put(UInt64(header.rows), at: 16)
        put(UInt32(header.denseCount), at: 24)
        put(UInt32(header.categoricalCount), at: 28)
        put(UInt32(header.rowsPerGroup), at: 32)
        put(UInt32(header.groupCount), at: 36)
        put(UInt64(header.checksumOffset), at: 40)
        put(UInt64(header.fileSize), at: 48)
        put(header.schemaHash, at: 56)
        for (k, b) in header.split.utf8.prefix(16).enumerated() { bytes[64 + k] = b }
        let sum = bytes.withUnsafeBytes {
            headerChecksum(UnsafeRawBufferPointer(rebasing: $0[0..<PreparedSplitFormat.headerChecksumOffset]), checksums: checksums)
        }
        put(sum, at: PreparedSplitFormat.headerChecksumOffset)
        return bytes
    }
}

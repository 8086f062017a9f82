import Foundation

extension AtomicDirectory {
    /// The output directory of a prepare (`--out`): refuses to replace a prepared dataset without
    /// `--force`, and anything else at all; removes temporaries of earlier prepares that died.
    static func preparing(path: String, force: Bool) throws(DataError) -> AtomicDirectory {
        let fm = FileManager.default
        let standardized = URL(fileURLWithPath: path).standardizedFileURL.path
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: standardized, isDirectory: &isDirectory) {
            let hasManifest = fm.fileExists(atPath: (standardized as NSString).appendingPathComponent(PreparedDataset.manifestName))
            let isEmpty = isDirectory.boolValue && ((try? fm.contentsOfDirectory(atPath: standardized))?.isEmpty ?? false)
            if !force {
                throw DataError(file: path, message: hasManifest ? "a prepared dataset already exists here" : "already exists",
                                hint: hasManifest ? "pass --force to replace it, or choose another --out" : "choose another --out")
            }
            if !hasManifest && !isEmpty {
                throw DataError(file: path, message: "exists and is not a prepared dataset; refusing to replace it, even with --force",
                                hint: "choose another --out, or remove it yourself")
            }
        }
        removeStale(path: path, tag: "preparing")
        return try AtomicDirectory(path: path, tag: "preparing")
    }

    /// Writes the manifest (JSON and a newline) into the directory.
    func writeManifest(_ manifest: PreparedManifest) throws(DataError) {
        let data: Data
        do {
            data = try PreparedManifest.encoder().encode(manifest)
        } catch {
            throw DataError(file: path, message: "cannot encode the manifest: \(error)")
        }
        let out = try OutputFile(path: file(PreparedDataset.manifestName))
        try out.write(Array(data) + [0x0A])
        try out.close()
    }

    /// The manifest's splits: all three, or for rows encoded like another dataset only `test`
    /// (the empty train and valid files are removed).
    func keepSplits(_ splits: [PreparedManifest.Split], applied: Bool) -> [PreparedManifest.Split] {
        guard applied else { return splits }
        for split in splits where split.name != "test" { try? FileManager.default.removeItem(atPath: file(split.file)) }
        return splits.filter { $0.name == "test" }
    }
}

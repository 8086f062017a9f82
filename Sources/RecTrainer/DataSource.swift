import Foundation
import Logging
import RecCore
import RecData

/// How training reads a prepared dataset (flags of `train`; ignored for TSV files).
public struct PreparedDataOptions: Sendable, Codable, Equatable {
    /// Shuffle each epoch (seeded by `--seed`); off: the split's stored order.
    public var shuffle: Bool = true
    /// 0: each epoch is a uniform permutation; W: windows of W rows (see `EpochOrder`).
    public var shuffleWindow: Int = 0
    /// The split evaluated on rank 0: "valid" or "test".
    public var evalSplit: String = "valid"
    /// Batches prefetched ahead of the step.
    public var prefetch: Int = 4
    /// Bytes of the mapped split a rank keeps resident before dropping its pages again (they stay
    /// in the page cache); bounds the resident size whatever the dataset's size.
    public var residentBytes: Int = 256 << 20

    public init() {}
}

extension TrainingConfig {
    /// Whether `dataPath` is a prepared dataset directory (rather than a TSV file).
    public var usesPreparedData: Bool { PreparedDataset.isDirectory(dataPath) }

    /// This configuration with the model shaped by the prepared dataset at `dataPath` (dense and
    /// categorical widths, per-field table sizes, no dense transform in the model: `prepare`
    /// applied it). For a TSV file, the configuration unchanged.
    ///
    /// The mlp reads the first `min(mlpDenseFeatures, dense fields)` dense fields.
    public func resolvingPreparedData() throws -> TrainingConfig {
        guard usesPreparedData else {
            do {
                try model.validate()
            } catch {
                throw TrainingError.modelConfig("the model configuration does not fit '\(dataPath)' (13 dense, 26 categorical fields C1-C26): \(error)")
            }
            return self
        }
        let dataset = try PreparedDataset(directory: dataPath)
        var config = self
        let d = dataset.denseCount, c = dataset.categoricalCount
        config.model.denseInputs = d
        config.model.categoricalFields = c
        config.model.vocabularySizes = dataset.manifest.vocabularySizes
        config.model.denseTransform = .identity
        config.datasetSchemaHash = dataset.manifest.schemaHash
        switch model.kind {
        case .mlp:
            guard d > 0 else {
                throw TrainingError.notEnoughData("'\(dataPath)' has no dense fields, and the mlp reads only dense fields; use --model dlrm")
            }
            config.model.mlpDenseFeatures = min(model.mlpDenseFeatures, d)
        case .dlrm, .logreg, .wideDeep, .ncf, .twoTower:
            guard c > 0 else {
                throw TrainingError.notEnoughData("'\(dataPath)' has no categorical fields; \(model.kind.rawValue) needs embeddings, use --model mlp")
            }
            config.model = try config.model.withFieldRoles(dataset.manifest.schema, source: "'\(dataPath)'")
            if let tables = config.model.modelTables, tables.rowCount * tables.dim > Int(Int32.max) {
                throw TrainingError.notEnoughData("the embedding tables of '\(dataPath)' (\(tables.rowCount) rows x \(tables.dim)) exceed 2^31 values; prepare with a larger --min-count or fewer --hash-buckets, or lower --embedding-dim")
            }
        }
        if evalPath != nil {
            throw TrainingError.notEnoughData("--eval applies to TSV data; a prepared dataset evaluates its own split (--eval-split valid or test)")
        }
        return config
    }
}

extension Trainer {
    /// Loads a prepared dataset: maps the training split, checks this rank's share of its row
    /// groups against their checksums (rank r checks groups r, r + N, ..., so together the ranks
    /// check all of them), and on rank 0 reads the evaluation split (checked in full).
    ///
    /// The shards count positions of the epoch order, not rows; `train` holds no rows, the
    /// batches come from `prepared`. A resume at a position the global batch does not divide
    /// gets the shard of the rest of that epoch, as with TSV data.
    func loadPrepared(resumeOffset: Int) throws -> LoadedData {
        let start = Date()
        let dataset = try PreparedDataset(directory: config.dataPath)
        let d = dataset.denseCount, c = dataset.categoricalCount
        guard config.model.denseInputs == d, config.model.categoricalFields == c,
              config.model.kind == .mlp || config.model.vocabularySizes == dataset.manifest.vocabularySizes else {
            throw TrainingError.notEnoughData("the model configuration does not match the prepared dataset '\(config.dataPath)' (\(d) dense, \(c) categorical fields); build the configuration with TrainingConfig.resolvingPreparedData()")
        }
        let train = try dataset.open(split: "train")
        let n = train.header.rows
        guard n > 0 else {
            throw TrainingError.notEnoughData("the training split of '\(config.dataPath)' is empty; re-run prepare with other split options")
        }
        let options = config.preparedData ?? PreparedDataOptions()
        try train.verify(groups: stride(from: rank, to: train.header.groupCount, by: worldSize), releaseEvery: options.residentBytes)
        let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: config.batchSize, rows: 0..<n)
        var resumeShard: BlockCyclicShard?
        if resumeOffset > 0 && resumeOffset % shard.globalBatchSize != 0 && resumeOffset < n {
            resumeShard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: config.batchSize, rows: resumeOffset..<n)
        }
        let order = EpochOrder(rows: n, shuffle: options.shuffle,
                               seed: SplitMix64.mix(config.seed ^ 0x5348_5546_464C_45), window: options.shuffleWindow)
        let loader = PreparedBatchLoader(split: train, shard: shard, order: order, prefetch: max(options.prefetch, 2),
                                         residentBudget: options.residentBytes)
        if rank == 0 && loader.gathersWithReads {
            logger.info("the training split (\(train.byteCount >> 20) MB) is larger than --resident-data (\(options.residentBytes >> 20) MB) and each epoch is a full permutation: rows are read with pread; --shuffle-window reads window by window, much faster")
        }

        var eval = FeatureRowsBuffer(capacity: 0, denseWidth: d, categoricalWidth: c)
        var groupSize: Int?
        if rank == 0 {
            var name = options.evalSplit
            if name == "valid", let valid = dataset.manifest.split("valid"), valid.rows == 0,
               let test = dataset.manifest.split("test"), test.rows > 0 {
                logger.info("the valid split is empty: evaluating on the test split")
                name = "test"
            }
            let split = try dataset.open(split: name)
            groupSize = dataset.manifest.split(name)?.groupSize
            try split.verifyAll(releaseEvery: options.residentBytes)
            eval = FeatureRowsBuffer(capacity: split.header.rows, denseWidth: d, categoricalWidth: c)
            for r in 0..<split.header.rows { split.copyRow(r, to: eval, slot: r) }
            eval.count = split.header.rows
            split.releaseResidentPages()
        }
        logger.debug("peak resident memory after loading: \(peakResidentMegabytes()) MB")
        logger.debug("mapped \(n) training rows (\(shard.localCount) per epoch on this rank, row groups verified) and read \(eval.count) evaluation rows in \(fmt(Date().timeIntervalSince(start), 2)) s")
        let none = RowStore(CriteoRows())
        return LoadedData(train: none, shard: shard, resumeShard: resumeShard, resumeRows: resumeShard == nil ? nil : none,
                          prepared: loader, eval: eval, evalGroupSize: groupSize, oracle: nil, totalTrainRows: n)
    }
}

extension ModelConfig {
    /// This configuration with ncf's and two-tower's user and item fields taken from a prepared
    /// dataset's field roles where the configuration does not name them: ncf reads the `user`
    /// and the `item` field; two-tower's user side is the `user` and `user-feature` fields, its
    /// item side the `item` and `item-feature` fields (context fields are not read). Other
    /// models are returned unchanged. Then checks the configuration (`validate`).
    public func withFieldRoles(_ schema: PreparedManifest.Schema, source: String = "the prepared dataset") throws -> ModelConfig {
        var config = self
        let roles = schema.categorical.map(\.role)
        switch kind {
        case .ncf:
            if config.userFields == nil, let u = roles.firstIndex(of: .user) { config.userFields = [u] }
            if config.itemFields == nil, let i = roles.firstIndex(of: .item) { config.itemFields = [i] }
        case .twoTower:
            if config.userFields == nil {
                let u = roles.indices.filter { roles[$0] == .user || roles[$0] == .userFeature }
                if !u.isEmpty { config.userFields = u }
            }
            if config.itemFields == nil {
                let i = roles.indices.filter { roles[$0] == .item || roles[$0] == .itemFeature }
                if !i.isEmpty { config.itemFields = i }
            }
        default:
            break
        }
        do {
            try config.validate()
        } catch {
            throw TrainingError.modelConfig("the model configuration does not fit \(source) (fields: \(schema.categorical.map { "\($0.name) (\($0.role.rawValue))" }.joined(separator: ", "))): \(error)")
        }
        return config
    }
}

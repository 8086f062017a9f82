import RecCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The default dataset: synthetic click logs in the Criteo TSV format, drawn from a known
/// logistic model, so a training run can be checked against the best achievable score.
///
/// ## The generative model
///
/// Row `i` is drawn from its own random stream, seeded from `(seed, i)`, so it does not depend
/// on how many rows are written, and any range of rows can be generated on its own. The
/// model's parameters (vocabulary sampling tables, per-value effects, hex spellings, the
/// intercept) are drawn from `seed` once, in `init`.
///
/// **Dense features** `I1`...`I13` are heavy-tailed counts `max(floor(exp(mu + sigma * z)) - 1, 0)`,
/// `z ~ N(0, 1)`, with per-feature `(mu, sigma)` (from small counts like `I10` to large ones like
/// `I5`), each empty with a per-feature probability (up to 75% for `I12`). `I2` is -1, -2 or -3
/// with probability 8%, like real Criteo. Effects are on `x_j = log1p(max(I_j, 0))`, with an
/// empty field read as 0 (exactly what a model sees):
///
///     0.28 (x1 - 0.7)                                 linear
///   + 0.7 exp(-((x3 - 2.3) / 0.6)^2 / 2)              a bump: only mid-range I3 clicks more
///   - 0.2 (x6 - 2.8)                                  linear, negative
///   + 0.45 tanh(1.5 (x7 - 1.2))                       saturating
///   + 0.12 (x9 - 3.5)                                 linear
///   + 0.35 [I10 >= 1]                                 a step
///   + 0.12 (x11 - 0.8)                                linear, small
///   + b[C17] (x5 - 6.5) / 2                           dense x categorical: the slope of x5
///                                                     depends on C17's value, b ~ N(0, 0.5^2)
///
/// **Categorical features** `C1`...`C26`: the value of field `j` is a Zipf-distributed id
/// `k` in `0..<V_j` (`P(k) ~ (k+1)^-s_j`, `s_j` in 1.05...1.15, `V_j` from 5 to 200,000), written
/// as the 8 hex digits of a per-field bijective hash of `k`; some fields are empty with a
/// per-field probability (2% to 75%). 15 fields carry a per-value effect `e_j[k] ~ N(0, sd_j^2)`,
/// `sd_j` from 0.2 to 0.4 (large-vocabulary fields have long tails of rare values whose effects are
/// hard to learn); the other 11 are pure noise. An empty field has effect 0.
///
/// **Crosses**:
/// - `C6 x C14` (24 x 27 values): every pair has its own effect, `N(0, 0.45^2)`;
/// - `C2 x C11` (583 x 5,683 values): a rank-4 interaction `u[C2] . v[C11]`,
///   `u, v ~ N(0, 0.42^2)` per component (sd of the product about 0.35), the kind of structure
///   a dot-product interaction over embeddings can represent.
///
/// **Label**: `p = sigmoid(intercept + all of the above)`, `label ~ Bernoulli(p)`, where the
/// intercept is calibrated (on 20,000 rows of a separate stream) so the mean click rate is 25%.
///
/// With these settings (measured on 200,000 rows, seeds 1 to 4) the oracle AUC (true `p`
/// against the sampled labels) is 0.81 to 0.83, the best additive model of `I1`...`I10` alone
/// reaches 0.64 to 0.68, and a logistic regression on all fields without crosses about 0.75:
/// most of the signal is in the categorical fields and their crosses.
///
/// `write` and `generate` produce the same rows: `generate(rows: n)` equals
/// `CriteoTSV.parse` of the file `write(rows: n, ...)` writes, and its probabilities equal the
/// side file's to 6 decimals. Output is identical for the same seed and platform (it uses the
/// C library's `exp`, `log` and `pow`).
public struct SynthGenerator: Sendable {
    /// The seed everything is drawn from.
    public let seed: UInt64
    /// The calibrated intercept of the logit (so the mean click rate is `targetClickRate`).
    public private(set) var intercept: Double
    /// The mean click rate the intercept is calibrated to.
    public static let targetClickRate = 0.25

    /// Start of field `j`'s entries in `aliasTable`, for j in 0...26.
    private let tableOffsets: [Int]
    /// Alias-method tables for the Zipf distributions, concatenated over the 26 fields: each
    /// entry is `threshold << 32 | alias` (one cache line touched per draw).
    private let aliasTable: [UInt64]
    /// Per-field salt of the hex spelling of a value id.
    private let hexSalt: [UInt32]
    /// Start of field `j`'s per-value effects in `effects`, or -1 when the field is noise.
    private let effectOffsets: [Int]
    private let effects: [Float]
    /// `C6 x C14` pair effects, row-major (24, 27).
    private let pairEffects: [Float]
    /// `C2 x C11` rank-4 factors: (583, 4) and (5683, 4).
    private let crossU: [Float]
    private let crossV: [Float]
    /// Slope of the `I5` effect for each `C17` value.
    private let slopes: [Float]

    /// Creates the generator for `seed`: draws the model's parameters and calibrates the intercept.
    public init(seed: UInt64) {
        self.seed = seed
        var parameters = RNG(seed: seed, stream: 0x5EED_0001)
        let specs = SynthGenerator.categoricalSpecs

        var offsets = [0]
        var totalVocabulary = 0
        for spec in specs {
            totalVocabulary += spec.vocabulary
            offsets.append(totalVocabulary)
        }
        var table = [UInt64](repeating: 0, count: totalVocabulary)
        var salts: [UInt32] = []
        var effectStarts: [Int] = []
        var effectValues: [Float] = []
        for (j, spec) in specs.enumerated() {
            SynthGenerator.buildZipfAlias(count: spec.vocabulary, exponent: spec.exponent, into: &table, at: offsets[j])
            salts.append(UInt32(truncatingIfNeeded: parameters.next()))
            if spec.effect > 0 {
                effectStarts.append(effectValues.count)
                for _ in 0..<spec.vocabulary {
                    effectValues.append(Float(parameters.normal() * spec.effect))
                }
            } else {
                effectStarts.append(-1)
            }
        }
        tableOffsets = offsets
        aliasTable = table
        hexSalt = salts
        effectOffsets = effectStarts
        effects = effectValues

        let pairCount = specs[SynthGenerator.pairFields.0].vocabulary * specs[SynthGenerator.pairFields.1].vocabulary
        pairEffects = (0..<pairCount).map { _ in Float(parameters.normal() * 0.45) }
        let rank = SynthGenerator.crossRank
        crossU = (0..<specs[SynthGenerator.crossFields.0].vocabulary * rank).map { _ in Float(parameters.normal() * 0.42) }
        crossV = (0..<specs[SynthGenerator.crossFields.1].vocabulary * rank).map { _ in Float(parameters.normal() * 0.42) }
        slopes = (0..<specs[SynthGenerator.slopeField].vocabulary).map { _ in Float(parameters.normal() * 0.5) }

        // Calibrate the intercept: bisection on the mean click probability of sample rows.
        intercept = 0
        var calibration = RNG(seed: seed, stream: 0x5EED_0002)
        let dense = UnsafeMutablePointer<Int64>.allocate(capacity: CriteoFormat.denseCount)
        let categorical = UnsafeMutablePointer<Int32>.allocate(capacity: CriteoFormat.categoricalCount)
        defer {
            dense.deallocate()
            categorical.deallocate()
        }
        var logits = [Double](repeating: 0, count: 20_000)
        for n in logits.indices {
            drawFeatures(&calibration, dense: dense, categorical: categorical)
            logits[n] = logit(dense: dense, categorical: categorical)
        }
        var low = -12.0, high = 12.0
        for _ in 0..<60 {
            let middle = (low + high) / 2
            var sum = 0.0
            for value in logits { sum += 1 / (1 + exp(-(value + middle))) }
            if sum / Double(logits.count) < SynthGenerator.targetClickRate { low = middle } else { high = middle }
        }
        intercept = (low + high) / 2
    }

    /// Writes rows `0..<rows` as Criteo TSV to `path` (label, 13 integers, 26 hex strings,
    /// tab-separated, `\n` line endings), and, if `probabilitiesPath` is given, each row's true
    /// click probability, one per line with 6 decimals (`0.123456`), to that file.
    ///
    /// Each file is written to a temporary name next to it and renamed into place at the end.
    ///
    /// - Throws: `DataError` when a file cannot be created or written.
    public func write(rows: Int, to path: String, probabilitiesPath: String?) throws(DataError) {
        precondition(rows >= 0, "row count must be nonnegative, got \(rows)")
        let data = try FileWriter(path: path)
        var probabilities: FileWriter? = nil
        if let probabilitiesPath { probabilities = try FileWriter(path: probabilitiesPath) }
        let dense = UnsafeMutablePointer<Int64>.allocate(capacity: CriteoFormat.denseCount)
        let categorical = UnsafeMutablePointer<Int32>.allocate(capacity: CriteoFormat.categoricalCount)
        defer {
            dense.deallocate()
            categorical.deallocate()
        }
        // Longest row: label, 13 tab+integer (at most 21 bytes), 26 tab+hex (9 bytes), newline.
        let maxRowBytes = 2 + CriteoFormat.denseCount * 21 + CriteoFormat.categoricalCount * 9
        for index in 0..<rows {
            let (label, probability) = sampleRow(index, dense: dense, categorical: categorical)
            try data.reserve(maxRowBytes)
            data.append(label ? UInt8(ascii: "1") : UInt8(ascii: "0"))
            for j in 0..<CriteoFormat.denseCount {
                data.append(UInt8(ascii: "\t"))
                if dense[j] != SynthGenerator.missingDense { data.append(decimal: dense[j]) }
            }
            for j in 0..<CriteoFormat.categoricalCount {
                data.append(UInt8(ascii: "\t"))
                if categorical[j] >= 0 { data.append(hex8: hexValue(field: j, id: categorical[j])) }
            }
            data.append(UInt8(ascii: "\n"))
            if let probabilities {
                try probabilities.reserve(16)
                probabilities.append(probability: probability)
                probabilities.append(UInt8(ascii: "\n"))
            }
        }
        try data.commit()
        try probabilities?.commit()
    }

    /// The rows `0..<rows` exactly as `write` writes them and `CriteoTSV.parse` reads them back,
    /// with each row's true click probability (unrounded).
    public func generate(rows: Int) -> (rows: CriteoRows, probabilities: [Double]) {
        precondition(rows >= 0, "row count must be nonnegative, got \(rows)")
        return generate(range: 0..<rows)
    }

    /// The rows with global indices in `range`; row `i` is the same as row `i` of a written file.
    public func generate(range: Range<Int>) -> (rows: CriteoRows, probabilities: [Double]) {
        precondition(range.lowerBound >= 0, "row indices must be nonnegative, got \(range)")
        let n = range.count
        var labels = [Float](repeating: 0, count: n)
        var denseOut = [Float](repeating: 0, count: n * CriteoFormat.denseCount)
        var categoricalOut = [UInt32](repeating: 0, count: n * CriteoFormat.categoricalCount)
        var probabilities = [Double](repeating: 0, count: n)
        let dense = UnsafeMutablePointer<Int64>.allocate(capacity: CriteoFormat.denseCount)
        let categorical = UnsafeMutablePointer<Int32>.allocate(capacity: CriteoFormat.categoricalCount)
        let hex = UnsafeMutablePointer<UInt8>.allocate(capacity: 8)
        defer {
            dense.deallocate()
            categorical.deallocate()
            hex.deallocate()
        }
        for (r, index) in range.enumerated() {
            let (label, probability) = sampleRow(index, dense: dense, categorical: categorical)
            labels[r] = label ? 1 : 0
            probabilities[r] = probability
            for j in 0..<CriteoFormat.denseCount where dense[j] != SynthGenerator.missingDense {
                denseOut[r * CriteoFormat.denseCount + j] = Float(dense[j])
            }
            for j in 0..<CriteoFormat.categoricalCount where categorical[j] >= 0 {
                FileWriter.formatHex8(hexValue(field: j, id: categorical[j]), into: hex)
                categoricalOut[r * CriteoFormat.categoricalCount + j] =
                    CriteoRows.hashCategorical(UnsafeRawBufferPointer(start: hex, count: 8))
            }
        }
        return (CriteoRows(labels: labels, dense: denseOut, categorical: categoricalOut), probabilities)
    }

    // MARK: - The model

    /// How one categorical field is drawn: Zipf over `vocabulary` ids with `exponent`, empty with
    /// probability `missing`, per-value effects with standard deviation `effect` (0 = noise field).
    struct CategoricalSpec: Sendable {
        let vocabulary: Int
        let exponent: Double
        let missing: Double
        let effect: Double
        init(_ vocabulary: Int, _ exponent: Double, _ missing: Double, _ effect: Double) {
            self.vocabulary = vocabulary
            self.exponent = exponent
            self.missing = missing
            self.effect = effect
        }
    }

    /// C1...C26. Vocabulary sizes follow the real Criteo fields' (capped at 200,000).
    static let categoricalSpecs: [CategoricalSpec] = [
        .init(1_460, 1.10, 0.00, 0.30),    // C1
        .init(583, 1.05, 0.00, 0.25),      // C2   (crossed with C11)
        .init(200_000, 1.15, 0.03, 0.30),  // C3
        .init(120_000, 1.10, 0.03, 0.00),  // C4
        .init(305, 1.10, 0.00, 0.00),      // C5
        .init(24, 1.05, 0.10, 0.30),       // C6   (crossed with C14)
        .init(12_517, 1.10, 0.00, 0.40),   // C7
        .init(633, 1.15, 0.00, 0.00),      // C8
        .init(5, 1.05, 0.00, 0.30),        // C9
        .init(93_145, 1.10, 0.00, 0.00),   // C10
        .init(5_683, 1.10, 0.00, 0.30),    // C11  (crossed with C2)
        .init(150_000, 1.12, 0.03, 0.00),  // C12
        .init(3_194, 1.10, 0.00, 0.25),    // C13
        .init(27, 1.05, 0.00, 0.25),       // C14  (crossed with C6)
        .init(14_992, 1.10, 0.00, 0.00),   // C15
        .init(180_000, 1.15, 0.03, 0.25),  // C16
        .init(10, 1.05, 0.00, 0.20),       // C17  (sets the slope of I5)
        .init(5_652, 1.10, 0.00, 0.00),    // C18
        .init(2_173, 1.10, 0.40, 0.30),    // C19
        .init(5, 1.05, 0.40, 0.00),        // C20
        .init(160_000, 1.12, 0.40, 0.00),  // C21
        .init(18, 1.05, 0.75, 0.20),       // C22
        .init(15, 1.05, 0.00, 0.35),       // C23
        .init(100_000, 1.15, 0.02, 0.35),  // C24
        .init(105, 1.10, 0.40, 0.00),      // C25
        .init(60_000, 1.10, 0.40, 0.25),   // C26
    ]

    /// I1...I13: `count = max(floor(exp(mu + sigma z)) - 1, 0)`, empty with probability `missing`.
    static let denseSpecs: [(mu: Double, sigma: Double, missing: Double)] = [
        (0.8, 1.2, 0.45),   // I1
        (3.0, 1.8, 0.00),   // I2 (sometimes -1...-3)
        (2.2, 1.3, 0.20),   // I3
        (1.6, 1.0, 0.20),   // I4
        (7.5, 2.2, 0.03),   // I5
        (3.5, 1.7, 0.20),   // I6
        (1.5, 1.5, 0.05),   // I7
        (2.5, 1.2, 0.01),   // I8
        (4.0, 1.5, 0.05),   // I9
        (0.4, 0.7, 0.45),   // I10
        (1.0, 1.0, 0.05),   // I11
        (-0.5, 1.2, 0.75),  // I12
        (1.8, 1.1, 0.20),   // I13
    ]

    static let pairFields = (5, 13)    // C6 x C14
    static let crossFields = (1, 10)   // C2 x C11
    static let crossRank = 4
    static let slopeField = 16         // C17
    static let missingDense = Int64.min

    /// The hex spelling's value for id `id` of field `field`: a bijection of the id, so distinct
    /// values never share a spelling.
    @inline(__always)
    func hexValue(field: Int, id: Int32) -> UInt32 {
        CriteoRows.fmix32(UInt32(truncatingIfNeeded: id) ^ hexSalt[field])
    }

    /// Draws row `index`'s features into `dense` (13; `missingDense` when empty) and
    /// `categorical` (26 ids; -1 when empty); returns its label and true click probability.
    @inline(__always)
    func sampleRow(_ index: Int, dense: UnsafeMutablePointer<Int64>,
                   categorical: UnsafeMutablePointer<Int32>) -> (label: Bool, probability: Double) {
        var rng = RNG(seed: seed ^ SplitMix64.mix(UInt64(index)), stream: 0x5EED_0003)
        drawFeatures(&rng, dense: dense, categorical: categorical)
        let probability = 1 / (1 + exp(-(intercept + logit(dense: dense, categorical: categorical))))
        let label = rng.nextDouble() < probability
        return (label, probability)
    }

    /// Draws one row's features from `rng`. The number of draws is the same for every row.
    @inline(__always)
    func drawFeatures(_ rng: inout RNG, dense: UnsafeMutablePointer<Int64>, categorical: UnsafeMutablePointer<Int32>) {
        var spare = 0.0
        for j in 0..<CriteoFormat.denseCount {
            let spec = SynthGenerator.denseSpecs[j]
            let z: Double
            if j & 1 == 0 {
                let pair = SynthGenerator.normalPair(&rng)
                z = pair.0
                spare = pair.1
            } else {
                z = spare
            }
            let isMissing = rng.nextDouble() < spec.missing
            let count = (exp(spec.mu + spec.sigma * z) - 1).rounded(.down)
            var value = Int64(min(max(count, 0), 2_147_483_647))
            if j == 1 {
                let roll = rng.next()
                if roll % 100 < 8 { value = -1 - Int64((roll >> 32) % 3) }
            }
            dense[j] = isMissing ? SynthGenerator.missingDense : value
        }
        // Draw all the random numbers first, then look the values up in a tight second loop, so
        // the cache misses in the large alias tables overlap instead of queueing.
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: CriteoFormat.categoricalCount) { draws in
            var missing: UInt32 = 0
            for j in 0..<CriteoFormat.categoricalCount {
                if rng.nextDouble() < SynthGenerator.categoricalSpecs[j].missing { missing |= 1 << UInt32(j) }
                draws[j] = rng.next()
            }
            for j in 0..<CriteoFormat.categoricalCount {
                let r = draws[j]
                let start = tableOffsets[j]
                let n = UInt64(tableOffsets[j + 1] - start)
                let slot = Int(truncatingIfNeeded: ((r >> 32) &* n) >> 32)
                let entry = aliasTable[start + slot]
                let id = UInt32(truncatingIfNeeded: r) < UInt32(truncatingIfNeeded: entry >> 32)
                    ? Int32(truncatingIfNeeded: slot) : Int32(truncatingIfNeeded: entry & 0xFFFF_FFFF)
                categorical[j] = missing & (1 << UInt32(j)) != 0 ? -1 : id
            }
        }
    }

    /// The logit without the intercept, from the features as written (see the type's doc comment).
    @inline(__always)
    func logit(dense: UnsafeMutablePointer<Int64>, categorical: UnsafeMutablePointer<Int32>) -> Double {
        @inline(__always) func x(_ j: Int) -> Double {
            let v = dense[j]
            return v == SynthGenerator.missingDense || v <= 0 ? 0 : log1p(Double(v))
        }
        var eta = 0.28 * (x(0) - 0.7)
        let bump = (x(2) - 2.3) / 0.6
        eta += 0.7 * exp(-0.5 * bump * bump)
        eta -= 0.2 * (x(5) - 2.8)
        eta += 0.45 * tanh(1.5 * (x(6) - 1.2))
        eta += 0.12 * (x(8) - 3.5)
        eta += x(9) > 0 ? 0.35 : 0
        eta += 0.12 * (x(10) - 0.8)

        var categoricalPart: Float = 0
        for j in 0..<CriteoFormat.categoricalCount {
            let start = effectOffsets[j]
            let id = Int(categorical[j])
            if start >= 0 && id >= 0 { categoricalPart += effects[start + id] }
        }
        let a = Int(categorical[SynthGenerator.pairFields.0]), b = Int(categorical[SynthGenerator.pairFields.1])
        if a >= 0 && b >= 0 {
            categoricalPart += pairEffects[a * SynthGenerator.categoricalSpecs[SynthGenerator.pairFields.1].vocabulary + b]
        }
        let u = Int(categorical[SynthGenerator.crossFields.0]), v = Int(categorical[SynthGenerator.crossFields.1])
        if u >= 0 && v >= 0 {
            let rank = SynthGenerator.crossRank
            for c in 0..<rank { categoricalPart += crossU[u * rank + c] * crossV[v * rank + c] }
        }
        let s = Int(categorical[SynthGenerator.slopeField])
        if s >= 0 { eta += Double(slopes[s]) * (x(4) - 6.5) / 2 }
        return eta + Double(categoricalPart)
    }

    /// Two independent standard normals (Box-Muller).
    @inline(__always)
    static func normalPair(_ rng: inout RNG) -> (Double, Double) {
        let u1 = Double((rng.next() >> 11) + 1) * (1.0 / 9_007_199_254_740_992.0)  // (0, 1]
        let u2 = rng.nextDouble()
        let radius = (-2 * log(u1)).squareRoot()
        let angle = 2 * Double.pi * u2
        return (radius * cos(angle), radius * sin(angle))
    }

    /// Fills `table[start..<start + count]` with Vose's alias table for `P(k) ~ (k + 1)^-exponent`,
    /// k in `0..<count`, each entry `threshold << 32 | alias`. Sampling: pick a slot uniformly,
    /// keep it if a uniform 32-bit number is below its threshold, else take its alias.
    static func buildZipfAlias(count: Int, exponent: Double, into table: inout [UInt64], at start: Int) {
        var weights = (0..<count).map { pow(Double($0 + 1), -exponent) }
        let total = weights.reduce(0, +)
        for k in weights.indices { weights[k] *= Double(count) / total }
        var small: [Int] = []
        var large: [Int] = []
        for k in weights.indices {
            if weights[k] < 1 { small.append(k) } else { large.append(k) }
        }
        while let s = small.popLast() {
            guard let l = large.popLast() else {
                small.append(s)
                break
            }
            let threshold = UInt64(min(weights[s] * 4_294_967_296.0, 4_294_967_295.0))
            table[start + s] = threshold << 32 | UInt64(l)
            weights[l] -= 1 - weights[s]
            if weights[l] < 1 { small.append(l) } else { large.append(l) }
        }
        // What is left has weight 1 up to rounding: always keep the slot.
        for k in small + large {
            table[start + k] = UInt64(UInt32.max) << 32 | UInt64(k)
        }
    }
}

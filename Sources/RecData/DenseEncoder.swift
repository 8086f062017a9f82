import Foundation
import RecCore

/// Running sums of the dense values of the training rows.
struct DenseStatistics: Sendable {
    var count = 0
    var sum: [Double]
    var sumOfSquares: [Double]

    init(fields: Int) {
        sum = Array(repeating: 0, count: fields)
        sumOfSquares = Array(repeating: 0, count: fields)
    }

    @inline(__always)
    mutating func add(_ values: UnsafePointer<Float>) {
        count += 1
        for j in sum.indices {
            let v = Double(values[j])
            sum[j] += v
            sumOfSquares[j] += v * v
        }
    }

    mutating func merge(_ other: DenseStatistics) {
        count += other.count
        for j in sum.indices {
            sum[j] += other.sum[j]
            sumOfSquares[j] += other.sumOfSquares[j]
        }
    }

    var mean: [Double] { sum.map { count > 0 ? $0 / Double(count) : 0 } }
    var std: [Double] {
        sum.indices.map { j in
            guard count > 0 else { return 1 }
            let m = sum[j] / Double(count)
            return max(sumOfSquares[j] / Double(count) - m * m, 0).squareRoot()
        }
    }
}

/// Prepare's encoding of dense fields (`--dense-transform`: log1p, standardize or none, with the
/// training split's statistics): turns raw dense values into what the split files store. (A
/// model's own transform of its dense inputs is RecCore's `DenseTransform`.)
struct DenseEncoder: Sendable {
    let kind: DenseTransformKind
    let mean: [Double]
    let inverseStd: [Double]
    /// `logTransform(i)` for the small non-negative integers (most of Criteo's counts): the same
    /// values, without a log1pf call each.
    let logTable: [Float]

    init(kind: DenseTransformKind, statistics: DenseStatistics) {
        self.init(kind: kind, mean: statistics.mean, std: statistics.std)
    }

    /// With the training split's mean and standard deviation per field (as the manifest records them).
    init(kind: DenseTransformKind, mean: [Double], std: [Double]) {
        self.kind = kind
        self.mean = mean
        inverseStd = std.map { $0 > 0 ? 1 / $0 : 1 }
        logTable = kind == .log1p ? (0..<4096).map { logTransform(Float($0)) } : []
    }

    /// raw: (fields) -> out: (fields). Returns nil, or the index of the first field whose
    /// transformed value is outside the float32 range (`out` is then incomplete): standardizing
    /// is computed in double precision, but a value far from the training split's mean, or a
    /// field whose training values hardly vary, can still leave float32.
    @inline(__always)
    func apply(_ raw: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int) -> Int? {
        switch kind {
        case .log1p:
            logTable.withUnsafeBufferPointer { table in
                for j in 0..<count {
                    let x = raw[j]
                    if x >= 0 && x < 4096, case let i = Int(x), Float(i) == x {
                        out[j] = table[i]
                    } else {
                        out[j] = logTransform(x)
                    }
                }
            }
        case .standardize:
            for j in 0..<count {
                let z = Float((Double(raw[j]) - mean[j]) * inverseStd[j])
                if !z.isFinite { return j }
                out[j] = z
            }
        case .none: out.update(from: raw, count: count)
        }
        return nil
    }

    /// Why field `j` (named `name`) with raw value `value` could not be transformed by `apply`.
    func problem(field j: Int, name: String, value: Float) -> LineProblem {
        LineProblem(field: name,
                    message: "\(value) standardizes to a value outside the float32 range ((x - mean) / std with the training split's mean \(mean[j]) and std \(1 / inverseStd[j]))",
                    hint: "the value is far outside the training rows' range: correct or remove the row, or use --dense-transform log1p or none")
    }
}

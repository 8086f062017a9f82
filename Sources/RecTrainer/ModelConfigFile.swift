import Foundation
import RecCore
import RecData

/// A model configuration file (`train --model-config FILE`): one JSON object, snake_case keys,
/// every key optional. Values start from the preset of `model` (the `--model` defaults); the
/// file's values replace them; command-line flags given explicitly replace the file's (a
/// `--model` that differs from the file's `model` is an error).
///
/// Keys: `model`, `hidden`, `dense_features`, `hash_buckets`, `embedding_dim`, `bottom`,
/// `bottom_output` (dlrm, optional: must equal `embedding_dim`, the interaction's vector size),
/// `top`, `initializer`, `factors`, `user_fields`, `item_fields` (field names or indices),
/// `activation` and `dropout` (one value for every MLP, or an object by MLP name).
/// Unknown keys, wrong types and inconsistent sizes are errors naming the key.
public struct ModelConfigFile: Sendable {
    public static let keys = ["model", "hidden", "dense_features", "hash_buckets", "embedding_dim", "bottom",
                              "bottom_output", "top", "initializer", "factors", "user_fields", "item_fields",
                              "activation", "dropout"]

    /// A field named in the file, by name or by index.
    public enum FieldReference: Sendable, Equatable {
        case name(String), index(Int)
    }

    public var path: String
    public var model: ModelKind?
    public var hidden: [Int]?
    public var denseFeatures: Int?
    public var hashBuckets: Int?
    public var embeddingDim: Int?
    public var bottom: [Int]?
    public var bottomOutput: Int?
    public var top: [Int]?
    public var initializer: Initializer?
    public var factors: Int?
    public var userFields: [FieldReference]?
    public var itemFields: [FieldReference]?
    /// nil key: every MLP.
    public var activation: [String?: Activation] = [:]
    public var dropout: [String?: Float] = [:]

    func fail(_ key: String, _ message: String) -> TrainingError {
        .modelConfig("model config \(path): \(key): \(message)")
    }

    /// Reads and checks the file (types, known keys, the sizes it can check alone).
    public init(path: String) throws {
        self.path = path
        let data: Data
        do { data = Data(try MappedFile.contents(of: path)) } catch {
            throw TrainingError.modelConfig("model config \(path): cannot read the file (--model-config): \(error.message)")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw TrainingError.modelConfig("model config \(path): not valid JSON (\(error.localizedDescription))")
        }
        guard let dict = object as? [String: Any] else {
            throw TrainingError.modelConfig("model config \(path): the top level must be a JSON object")
        }
        for key in dict.keys.sorted() where !Self.keys.contains(key) {
            throw fail(key, "unknown key; the keys are \(Self.keys.joined(separator: ", "))")
        }
        /// `v` as an Int: nil when it is not a whole number; a whole number beyond Int is out of
        /// range (not "not an integer").
        func whole(_ key: String, _ v: Any) throws -> Int? {
            guard let n = v as? NSNumber, !Self.isBoolean(n) else { return nil }
            if let i = Int(exactly: n.doubleValue) { return i }
            if ["q", "l", "i", "s"].contains(String(cString: n.objCType)) { return n.intValue }
            guard n.doubleValue.isFinite && n.doubleValue.rounded() == n.doubleValue else { return nil }
            throw fail(key, "\(n) is out of range")
        }
        func int(_ key: String) throws -> Int? {
            guard let v = dict[key] else { return nil }
            guard let i = try whole(key, v) else { throw fail(key, "expected an integer, got \(Self.describe(v))") }
            return i
        }
        func ints(_ key: String) throws -> [Int]? {
            guard let v = dict[key] else { return nil }
            guard let a = v as? [Any] else { throw fail(key, "expected an array of integers, got \(Self.describe(v))") }
            return try a.map { e in
                guard let i = try whole(key, e) else { throw fail(key, "expected an array of integers, found \(Self.describe(e))") }
                return i
            }
        }
        func string(_ key: String) throws -> String? {
            guard let v = dict[key] else { return nil }
            guard let s = v as? String else { throw fail(key, "expected a string, got \(Self.describe(v))") }
            return s
        }
        func fields(_ key: String) throws -> [FieldReference]? {
            guard let v = dict[key] else { return nil }
            guard let a = v as? [Any], !a.isEmpty else { throw fail(key, "expected a non-empty array of field names or indices, got \(Self.describe(v))") }
            return try a.map { e in
                if let s = e as? String { return .name(s) }
                if let i = try whole(key, e) { return .index(i) }
                throw fail(key, "expected field names or indices, found \(Self.describe(e))")
            }
        }
        /// One of a string enumeration's values, by name.
        func choice<T: RawRepresentable & CaseIterable>(_ key: String, _ what: String) throws -> T? where T.RawValue == String {
            guard let s = try string(key) else { return nil }
            guard let value = T(rawValue: s) else {
                throw fail(key, "unknown \(what) '\(s)'; use \(T.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return value
        }
        model = try choice("model", "model")
        hidden = try ints("hidden")
        denseFeatures = try int("dense_features")
        hashBuckets = try int("hash_buckets")
        embeddingDim = try int("embedding_dim")
        bottom = try ints("bottom")
        bottomOutput = try int("bottom_output")
        top = try ints("top")
        initializer = try choice("initializer", "initializer")
        factors = try int("factors")
        userFields = try fields("user_fields")
        itemFields = try fields("item_fields")
        func activationValue(_ key: String, _ v: Any) throws -> Activation {
            guard let s = v as? String, let a = Activation(rawValue: s), a != .linear else {
                throw fail(key, "expected relu, sigmoid or tanh, got \(Self.describe(v))")
            }
            return a
        }
        func rateValue(_ key: String, _ v: Any) throws -> Float {
            guard let n = v as? NSNumber, !Self.isBoolean(n) else {
                throw fail(key, "expected a rate in [0, 1), got \(Self.describe(v))")
            }
            let r = n.floatValue
            guard r >= 0 && r < 1 else { throw fail(key, "rate \(r) is outside [0, 1)") }
            return r
        }
        /// A setting for every MLP (a value; nil key) or per MLP (an object by MLP name).
        func perMLP<T>(_ key: String, _ value: (String, Any) throws -> T) throws -> [String?: T] {
            guard let v = dict[key] else { return [:] }
            guard let per = v as? [String: Any] else { return [nil: try value(key, v)] }
            var values: [String?: T] = [:]
            for (name, x) in per { values[name] = try value("\(key).\(name)", x) }
            return values
        }
        activation = try perMLP("activation", activationValue)
        dropout = try perMLP("dropout", rateValue)
    }

    /// Whether a decoded JSON number was `true` or `false`.
    static func isBoolean(_ n: NSNumber) -> Bool {
        let type = String(cString: n.objCType)
        return type == "c" || type == "B"
    }

    static func describe(_ v: Any) -> String {
        if let n = v as? NSNumber { return Self.isBoolean(n) ? "a boolean (\(n.boolValue))" : "the number \(n)" }
        if let s = v as? String { return "the string \"\(s)\"" }
        if v is [Any] { return "an array" }
        if v is [String: Any] { return "an object" }
        if v is NSNull { return "null" }
        return "\(type(of: v))"
    }

    /// Writes the file's values into `config` (whose kind is already decided). `fieldNames`: the
    /// categorical field names of the data `data` (named in a refusal), to resolve `user_fields`
    /// and `item_fields` by name.
    public func apply(to config: inout ModelConfig, fieldNames: [String], data: String) throws {
        let stacks = ModelConfig.stackNames(config.kind)
        if let hidden { config.hidden = hidden }
        if let denseFeatures { config.mlpDenseFeatures = denseFeatures }
        if let hashBuckets { config.hashBuckets = hashBuckets }
        if let embeddingDim { config.embeddingDim = embeddingDim }
        if let bottom { config.bottom = bottom }
        if let top { config.top = top }
        if let initializer { config.initializer = initializer }
        if let factors { config.factors = factors }
        if let bottomOutput {
            guard config.kind == .dlrm else { throw fail("bottom_output", "applies to dlrm only, this is \(config.kind.rawValue)") }
            guard bottomOutput == config.embeddingDim else {
                throw fail("bottom_output", "the bottom MLP's output enters the dot interaction with the embeddings, so it must equal embedding_dim (\(config.embeddingDim)), got \(bottomOutput)")
            }
        }
        func resolve(_ key: String, _ refs: [FieldReference]) throws -> [Int] {
            try refs.map { ref in
                switch ref {
                case .index(let i):
                    guard i >= 0 && i < fieldNames.count else {
                        throw fail(key, "field index \(i) is outside the \(fieldNames.count) categorical fields of '\(data)'")
                    }
                    return i
                case .name(let n):
                    guard let i = fieldNames.firstIndex(of: n) else {
                        throw fail(key, "'\(data)' has no categorical field '\(n)'; its fields: \(fieldNames.joined(separator: ", "))")
                    }
                    return i
                }
            }
        }
        if let userFields { config.userFields = try resolve("user_fields", userFields) }
        if let itemFields { config.itemFields = try resolve("item_fields", itemFields) }
        if (userFields != nil || itemFields != nil) && config.kind != .ncf && config.kind != .twoTower {
            throw fail(userFields != nil ? "user_fields" : "item_fields", "applies to ncf and two-tower only, this is \(config.kind.rawValue)")
        }
        /// Per-MLP settings into `target`: a named MLP's own, else the one for every MLP.
        func apply<T>(_ key: String, _ values: [String?: T], to target: inout [String: T]) throws {
            for (name, value) in values {
                if let name {
                    guard stacks.contains(name) else { throw fail("\(key).\(name)", "\(config.kind.rawValue) has no MLP named '\(name)'; its MLPs: \(stacks.isEmpty ? "none" : stacks.joined(separator: ", "))") }
                    target[name] = value
                } else {
                    for s in stacks where values[s] == nil { target[s] = value }
                }
            }
        }
        try apply("activation", activation, to: &config.activations)
        try apply("dropout", dropout, to: &config.dropout)
    }
}

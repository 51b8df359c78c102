import ArgumentParser
import FoldPipeline
import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph

/// `bnfold inspect IN`: what a fold would do, without writing anything.
///
/// Runs the same pipeline as the fold command on a copy of the model and
/// lists every BatchNormalization of the input — main graph and subgraphs —
/// with the node before and after it and the verdict: would fold (and into
/// what), or kept and why. Nothing is written; the input is only read.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what would be folded and what would be kept, and why, without writing anything.")

    @Argument(help: "The model to read (.onnx).")
    var input: String

    @OptionGroup var passOptions: PassOptions

    @Flag(help: "Print the report as one JSON object on stdout.")
    var json = false

    func run() throws {
        do {
            var model = try readValidModel(input)
            let original = model
            let manager = PassManager(passes: try passOptions.selected(), assumeConstantInputs: passOptions.assumeConstantInputs)
            let passReport = try FoldPipeline.runPasses(manager, on: &model, input: input)
            let report = InspectReport(input: input, passes: manager.activePasses.map(\.name), original: original,
                                       folded: model, remarks: passReport.remarks)
            print(json ? report.json() : report.text(), terminator: json ? "\n" : "")
        } catch let error as ModelFileError {
            printError(error.description)
            throw ExitStatus.inputError
        }
    }
}

/// The `inspect` report: one entry per BatchNormalization of the input.
struct InspectReport: Encodable {
    /// A node next to a BatchNormalization.
    struct Neighbour: Encodable, Equatable {
        var op: String
        var name: String
    }
    struct Entry: Encodable {
        /// The BN's name (`BatchNormalization#i` when unnamed); inside a
        /// subgraph prefixed with the path to it (`If_0/then_branch/`).
        var name: String
        /// The node that computes the BN's input (nil: a graph input or initializer).
        var producer: Neighbour?
        /// The nodes that read the BN's output.
        var consumers: [Neighbour]
        /// "fold" or "keep".
        var verdict: String
        /// The deciding remark's reason id and sentence (empty when no pass spoke about this BN).
        var reason: String
        var message: String
        var pass: String

        enum CodingKeys: String, CodingKey { case name, producer, consumers, verdict, reason, message, pass }
        // By hand so that a BN fed by a graph input has `"producer": null`, not a missing key.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(producer, forKey: .producer)
            try c.encode(consumers, forKey: .consumers)
            try c.encode(verdict, forKey: .verdict)
            try c.encode(reason, forKey: .reason)
            try c.encode(message, forKey: .message)
            try c.encode(pass, forKey: .pass)
        }
    }

    var tool = "bnfold"
    var version = BnfoldVersion.string
    var input: String
    var passes: [String]
    var batchnorms: [Entry] = []
    /// Every remark of the pipeline, as in the fold command's JSON.
    var remarks: [Remark]

    init(input: String, passes: [String], original: Model, folded: Model, remarks: [Remark]) {
        self.input = input
        self.passes = passes
        self.remarks = remarks
        guard let graph = original.graph else { return }
        // A BN is identified by its path and output name (display names of
        // unnamed nodes carry an index that moves when other nodes go).
        let remaining = Set(InspectReport.batchNorms(in: folded.graph ?? Graph(name: nil), path: "").map(\.key))
        // Remarks grouped by node identity (scope path and NodeID) once:
        // labels can coincide, identities cannot.
        let remarksByNode = Dictionary(grouping: remarks.filter { $0.nodeID != nil }) { NodeKey(scope: $0.scope, id: $0.nodeID!) }
        for (name, key, identity, producer, consumers) in InspectReport.batchNorms(in: graph, path: "") {
            let about = remarksByNode[identity] ?? []
            let applied = about.last { $0.kind == .applied }
            let missed = about.last { $0.kind == .missed }
            let gone = !remaining.contains(key)
            let deciding = gone ? applied : (missed ?? applied)
            batchnorms.append(Entry(name: name, producer: producer, consumers: consumers,
                                    verdict: gone ? "fold" : "keep", reason: deciding?.reason ?? "",
                                    message: deciding?.message ?? "", pass: deciding?.pass ?? ""))
        }
    }

    /// A node's identity across the model: its graph's scope path and its ID there.
    struct NodeKey: Hashable { let scope: [String]; let id: NodeID }

    /// Each BatchNormalization of `graph` and its subgraphs, with its neighbours.
    static func batchNorms(in graph: Graph, path: String, scope: [String] = [])
        -> [(name: String, key: String, identity: NodeKey, producer: Neighbour?, consumers: [Neighbour])] {
        var result: [(name: String, key: String, identity: NodeKey, producer: Neighbour?, consumers: [Neighbour])] = []
        // Producers and readers come from the graph's use/def index (the
        // one producer map): first producer, readers in node order, each once.
        func neighbour(_ id: NodeID) -> Neighbour { Neighbour(op: graph[id].opType, name: graph.label(id)) }
        for id in graph.nodeIDs {
            let node = graph[id]
            if node.isOp("BatchNormalization"), let x = node.inputs.first, let y = node.outputs.first {
                let producer = x.isEmpty ? nil : graph.value(named: x).producer.map { neighbour($0.node) }
                var seen = Set<NodeID>()
                let readers = y.isEmpty ? [] : graph.value(named: y).uses.filter { $0.input != nil && seen.insert($0.node).inserted }
                result.append((path + graph.label(id), path + y, NodeKey(scope: scope, id: id), producer,
                               readers.map { neighbour($0.node) }))
            }
            for attribute in node.attributes {
                for (k, sub) in attribute.subgraphs.enumerated() {
                    let suffix = attribute.subgraphs.count > 1 ? "\(attribute.name ?? "")[\(k)]" : (attribute.name ?? "")
                    let owner = graph.label(id)
                    result += batchNorms(in: sub, path: path + owner + "/" + suffix + "/", scope: scope + [owner, suffix])
                }
            }
        }
        return result
    }

    func json() -> String { reportJSON(self) }

    func text() -> String {
        var out = TerminalLines()
        out.add("bnfold \(version) inspect: \(input)")
        for e in batchnorms {
            var where_ = e.producer.map { "after \($0.op) '\($0.name)'" } ?? "after a graph input"
            if !e.consumers.isEmpty {
                where_ += ", before " + e.consumers.map { "\($0.op) '\($0.name)'" }.joined(separator: ", ")
            }
            let verdict = e.verdict == "fold" ? "would fold" : "kept"
            let why = e.reason.isEmpty ? "" : " [\(e.reason)]: \(e.message)"
            out.add("  \(e.name) (\(where_)): \(verdict)\(why)")
        }
        let folds = batchnorms.filter { $0.verdict == "fold" }.count
        out.add("  BatchNormalization: \(batchnorms.count) found, \(folds) would fold, \(batchnorms.count - folds) kept")
        if passes.isEmpty { out.add("  (no passes run)") }
        return out.text
    }
}

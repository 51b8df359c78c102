import Testing
@testable import ONNXGraph
import TestSupport

/// The IR's memory layout decisions (docs/ARCHITECTURE.md, "The IR"): a
/// Tensor keeps its common fields inline and the rare ones in one box; the
/// use/def index is one entry per name and its patches match rebuilds.
@Suite struct CompactIRTests {
    @Test func tensorStaysSmallInline() {
        // name 16, data_type 5 (padded to 8), dims 8, raw_data 25 (padded to
        // 32), the box 8: 72 bytes. It was 304 with every field inline.
        #expect(MemoryLayout<Tensor>.size <= 72)
    }

    @Test func boxedFieldsReadAndWriteLikeStoredOnes() {
        var t = Tensor(name: "t", elementType: .float, dims: [2])
        #expect(!t.hasRareFields)
        t.floatData = ByteBuffer([0, 0, 128, 63, 0, 0, 0, 64])
        t.docString = "doc"
        t.segment = Tensor.Segment(begin: 0, end: 2)
        t.unknownFields.fields.append(.init(number: 99, wireType: 0, payload: [1]))
        #expect(t.hasRareFields)
        #expect(t.floatData.array == [0, 0, 128, 63, 0, 0, 0, 64])
        #expect(t.docString == "doc" && t.segment?.end == 2 && t.unknownFields.fields.count == 1)

        // A copy is independent (a write stores a new box).
        var u = t
        u.docString = "other"
        #expect(t.docString == "doc" && u.docString == "other" && t != u)

        // Set in another order: equal.
        var v = Tensor(name: "t", elementType: .float, dims: [2])
        v.unknownFields = UnknownFields([.init(number: 99, wireType: 0, payload: [1])])
        v.segment = Tensor.Segment(begin: 0, end: 2)
        v.docString = "doc"
        v.floatData = ByteBuffer([0, 0, 128, 63, 0, 0, 0, 64])
        #expect(v == t)

        // Back to the defaults: the box goes, and the tensor equals a fresh one.
        for var x in [t, v] {
            x.floatData = .empty
            x.docString = nil
            x.segment = nil
            x.unknownFields = UnknownFields()
            #expect(!x.hasRareFields)
            #expect(x == Tensor(name: "t", elementType: .float, dims: [2]))
        }
        // Setting a default on a tensor without a box makes none.
        var w = Tensor(name: "w", elementType: .int64, dims: [])
        w.int64Data = .empty
        w.metadataProps = []
        w.externalBytes = nil
        #expect(!w.hasRareFields)
        // externalBytes is not part of the message: not compared, but kept.
        w.externalBytes = ExternalBytes(memory: ByteBuffer([1]))
        #expect(w.hasRareFields && w == Tensor(name: "w", elementType: .int64, dims: []))
    }

    /// A chain of edits of every kind, with the index built first: after each
    /// one the patched index equals a rebuild (debug builds also check this
    /// inside every edit), and names freed by removals are free again.
    @Test func patchedIndexMatchesRebuild() {
        var g = Graph(name: "g",
                      nodes: [Node(opType: "Add", inputs: ["x", "w"], outputs: ["a"], name: "add"),
                              Node(opType: "Mul", inputs: ["a", "w"], outputs: ["b"], name: "mul"),
                              Node(opType: "Identity", inputs: ["b"], outputs: ["y"], name: "id")],
                      inputs: [valueInfo("x", .float, dims: [2])], outputs: [valueInfo("y", .float, dims: [2])],
                      initializers: [makeTensor("w", .float, dims: [2], values: [1, 2])])
        func expectMatchesRebuild(_ step: String) {
            let patched = g.index.built(for: g)
            let rebuilt = GraphIndex.build(g)
            #expect(patched.entries == rebuilt.entries, "after \(step)")
        }
        _ = g.value(named: "x")  // build the index
        let ids = g.nodeIDs
        g.setInput(node: ids[1], slot: 1, to: "x"); expectMatchesRebuild("setInput")
        g.appendInitializer(makeTensor("v", .float, dims: [2], values: [3, 4])); expectMatchesRebuild("appendInitializer")
        g.appendInput(node: ids[2], "v"); expectMatchesRebuild("appendInput")
        let extra = g.appendNode(Node(opType: "Neg", inputs: ["y"], outputs: ["z"], name: "neg")); expectMatchesRebuild("appendNode")
        g.replaceAllUses(of: "a", with: "x"); expectMatchesRebuild("replaceAllUses")
        g.removeNodes([ids[0], extra]); expectMatchesRebuild("removeNodes")
        g.setOutput(node: ids[1], slot: 0, to: "b2"); expectMatchesRebuild("setOutput")
        g.removeInitializers(named: ["w"]); expectMatchesRebuild("removeInitializers")
        g.removeInputs(named: ["x"]); expectMatchesRebuild("removeInputs")

        #expect(g.value(named: "w").initializer == nil)
        #expect(g.uniqueName("add") == "add" && g.uniqueName("mul") == "mul_1")
        #expect(g.value(named: "v").uses.count == 1 && g.value(named: "v").initializer != nil)
        #expect(g.value(named: "b2").producer?.node == ids[1])
        // "b" lost its producer (renamed to b2) and "x" its input: read, not defined.
        #expect(g.capturedNames == ["b", "x"])
    }
}

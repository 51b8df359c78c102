import ONNXGraph
import Testing

/// `value_info` is kept in slots with a name index: removal costs the names
/// removed, declarations are found without a scan, order and copies hold.
@Suite struct ValueInfoIndexTests {
    func info(_ name: String, _ dims: [Int64]) -> ValueInfo {
        ValueInfo(name: name, type: .tensor(.float, dims: dims))
    }

    @Test func removalKeepsOrderAndLeavesCopiesAlone() {
        var g = Graph(name: "g", inputs: [info("x", [1])], outputs: [info("y", [1])])
        g.valueInfo = [info("a", [1]), info("b", [2]), info("a", [3]), info("c", [4])]
        let copy = g
        #expect(g.declarations(of: "a").map { $0.type?.tensorType?.shape?.dims.count } == [1, 1])
        #expect(g.declarations(of: "x").count == 1)
        g.removeValueInfo(named: ["a", "nope"])
        #expect(g.valueInfo.map(\.name) == ["b", "c"])
        #expect(g.declarations(of: "a").isEmpty)
        #expect(g.declarations(of: "c").count == 1)
        #expect(copy.valueInfo.map(\.name) == ["a", "b", "a", "c"])
        #expect(copy.declarations(of: "a").count == 2)
        // Assigning the list replaces the index too.
        g.valueInfo.append(info("d", [5]))
        #expect(g.valueInfo.map(\.name) == ["b", "c", "d"])
        #expect(g.declarations(of: "d").count == 1)
        g.removeValueInfo(named: ["b"])
        #expect(g.valueInfo.map(\.name) == ["c", "d"])
        #expect(g != copy)
    }
}

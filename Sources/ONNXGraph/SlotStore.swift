/// The stable identity of a node in its ``Graph``: its slot in the graph's
/// node storage.
///
/// A read model's nodes get the IDs 0, 1, 2, … in file order; a node added
/// since gets the next unused one. Erasing a node leaves its slot empty
/// instead of moving the nodes after it, so an ID — held by a use list, a
/// worklist or a remark — names the same node through every edit of
/// `GraphEdits.swift`, and an edit costs what it touches rather than the
/// graph's size. Only assigning through ``Graph/nodes`` (the positional
/// view) renumbers: it compacts the storage, and the IDs become positions
/// again.
///
/// An integer literal is a NodeID (`graph[0]`, `Use(node: 2, input: 0)`):
/// tests and small tools name the nodes of a graph they just built by
/// position, which is what the ID is then.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The slot; equal to the node's position while nothing was erased.
    public let raw: Int
    public init(_ raw: Int) { self.raw = raw }
    public init(integerLiteral raw: Int) { self.raw = raw }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.raw < b.raw }
    public var description: String { "node \(raw)" }
}

/// The stable identity of an initializer in its ``Graph`` (a slot, as
/// ``NodeID`` is for nodes): what ``Value/initializer`` answers in and
/// `graph[id]` reads.
public struct InitializerID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public let raw: Int
    public init(_ raw: Int) { self.raw = raw }
    public init(integerLiteral raw: Int) { self.raw = raw }
    public static func < (a: InitializerID, b: InitializerID) -> Bool { a.raw < b.raw }
    public var description: String { "initializer \(raw)" }
}

/// What an erased slot holds: a value that owns nothing, so an erased
/// tensor's data is released at once.
protocol Tombstone { static var tombstone: Self { get } }

extension Node: Tombstone { static var tombstone: Node { Node(opType: "", inputs: [], outputs: []) } }
extension Tensor: Tombstone { static var tombstone: Tensor { Tensor(name: nil, elementType: .undefined, dims: []) } }
extension ValueInfo: Tombstone { static var tombstone: ValueInfo { ValueInfo(name: nil) } }

/// Elements in order with O(1) erasure: erased slots are marked, not
/// removed, so the slots of the others (their IDs) never move.
///
/// While nothing is erased, ``live`` is the storage itself (no copy);
/// afterwards it is the kept elements in order, built once per state and
/// cached (copies of the store share the cache until one of them changes).
struct SlotStore<Element: Equatable & Tombstone>: Equatable {
    private(set) var slots: [Element] = []
    /// Per slot, whether it was erased; empty while nothing is.
    private var erased: [Bool] = []
    private(set) var erasedCount = 0
    private var view = LiveView<Element>()

    init(_ elements: [Element] = []) { slots = elements }

    var count: Int { slots.count - erasedCount }
    var slotCount: Int { slots.count }

    func isLive(_ slot: Int) -> Bool {
        slot >= 0 && slot < slots.count && (erasedCount == 0 || !erased[slot])
    }

    /// The live slots, ascending.
    var liveSlots: [Int] {
        erasedCount == 0 ? Array(slots.indices) : slots.indices.filter { !erased[$0] }
    }

    /// The live elements in order.
    var live: [Element] {
        if erasedCount == 0 { return slots }
        return view.get { slots.indices.compactMap { erased[$0] ? nil : slots[$0] } }
    }

    subscript(slot: Int) -> Element {
        // A borrow, not a copy: `store[slot].inputs` must not retain every
        // field of the element (Node copies were a third of a fold's time).
        _read { yield slots[slot] }
        set { slots[slot] = newValue; view = LiveView() }
    }

    mutating func modify<R>(_ slot: Int, _ body: (inout Element) throws -> R) rethrows -> R {
        view = LiveView()
        return try body(&slots[slot])
    }

    mutating func append(_ element: Element) -> Int {
        slots.append(element)
        if erasedCount > 0 { erased.append(false) }
        view = LiveView()
        return slots.count - 1
    }

    mutating func erase(_ slot: Int) {
        guard isLive(slot) else { return }
        if erased.isEmpty { erased = [Bool](repeating: false, count: slots.count) }
        erased[slot] = true
        erasedCount += 1
        slots[slot] = .tombstone
        view = LiveView()
    }

    /// Drops the erased slots: the live elements get the slots 0, 1, 2, …
    mutating func compact() {
        guard erasedCount > 0 else { return }
        slots = live
        erased = []
        erasedCount = 0
        view = LiveView()
    }

    /// Two stores are equal when their live elements are.
    static func == (a: SlotStore, b: SlotStore) -> Bool { a.live == b.live }
}

/// The cached compacted elements of one ``SlotStore`` state. Replaced (not
/// mutated) on every change, so a copy that still shares it has exactly the
/// state it was built for.
final class LiveView<Element>: @unchecked Sendable {
    private var array: [Element]?
    func get(_ make: () -> [Element]) -> [Element] {
        if let array { return array }
        let made = make()
        array = made
        return made
    }
}

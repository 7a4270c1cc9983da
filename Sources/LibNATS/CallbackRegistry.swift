import Synchronization

/// libnats calls back on its own threads with a `void *closure` given at
/// registration, possibly after the Swift object that registered has gone
/// (a callback already queued when a connection closes). So the closure is
/// never a pointer to a Swift object: it is a number looked up here, and a
/// callback whose owner unregistered finds nothing and does nothing.
enum CallbackRegistry {
    private static let entries = Mutex<(next: Int, byId: [Int: any AnyObject & Sendable])>((1, [:]))

    static func register(_ owner: some AnyObject & Sendable) -> Int {
        entries.withLock { state in
            let id = state.next
            state.next += 1
            state.byId[id] = owner
            return id
        }
    }

    static func unregister(_ id: Int) {
        _ = entries.withLock { $0.byId.removeValue(forKey: id) }
    }

    /// The owner registered under the closure pointer libnats passed back.
    static func owner<Owner: AnyObject>(_ closure: UnsafeMutableRawPointer?, as type: Owner.Type) -> Owner? {
        guard let closure else { return nil }
        let id = Int(bitPattern: closure)
        return entries.withLock { $0.byId[id] } as? Owner
    }

    static func closure(for id: Int) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: id)
    }
}

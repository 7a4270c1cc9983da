/// Where an input came from, when that source wants to hear what became
/// of it: a JetStream message is acknowledged once the batch holding its
/// event has committed, and terminated (never delivered again) once it is
/// rejected. Lines from stdin have none.
public protocol Delivery: AnyObject, Sendable {
    /// Its event is committed (applied, pending, or a duplicate of one that is).
    func committed()
    /// It was rejected, and the reject written to stdout.
    func rejected()
}

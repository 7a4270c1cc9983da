import LibPQ
import TaskModel

/// A batch's updates of `meetperry.task` rows found one way (`RowLocator`):
/// each column as one binary array parameter of a single `UPDATE … FROM
/// unnest(…)`. The rows reach the statement without a table to stage them
/// in: a `COPY` into a temporary table cost PostgreSQL a tuple slot for each
/// of up to a thousand rows, a write and a scan of the table, and its
/// truncation at every commit.
struct RowUpdateArrays {
    /// How the statement finds each row: by address (`tid`), or copied in by a transaction (`xid`).
    let locator: BinaryArrayEncoder.Element
    private var locators: BinaryArrayEncoder
    private var tasks = BinaryArrayEncoder(of: .int4)
    private var taskIds = BinaryArrayEncoder(of: .text)
    private var userIds = BinaryArrayEncoder(of: .text)
    private var contents = BinaryArrayEncoder(of: .text)
    private var created = BinaryArrayEncoder(of: .timestamptz)
    private var completed = BinaryArrayEncoder(of: .timestamptz)
    private var deleted = BinaryArrayEncoder(of: .timestamptz)

    init(locator: BinaryArrayEncoder.Element) {
        precondition(locator == .tid || locator == .xid, "RowUpdateArrays: rows are found by tid or by xid")
        self.locator = locator
        locators = BinaryArrayEncoder(of: locator)
    }

    var count: Int { tasks.count }

    mutating func removeAll() {
        locators.removeAll()
        tasks.removeAll()
        taskIds.removeAll()
        userIds.removeAll()
        contents.removeAll()
        created.removeAll()
        completed.removeAll()
        deleted.removeAll()
    }

    /// One row to update; its locator must be of this kind.
    mutating func add(_ update: BatchPlan.RowUpdate) {
        switch update.locator {
        case .address(let address): locators.addTID(block: address.block, offset: address.offset)
        case .copiedIn(let transaction): locators.addXID(transaction)
        }
        tasks.add(update.task)
        taskIds.add(update.state.taskId)
        userIds.add(update.state.userId)
        contents.add(update.state.content)
        created.addTimestamp(microsecondsSinceUnixEpoch: update.state.createdDate.microsecondsSinceEpoch)
        completed.addTimestamp(microsecondsSinceUnixEpoch: update.state.completedDate?.microsecondsSinceEpoch)
        deleted.addTimestamp(microsecondsSinceUnixEpoch: update.state.deletedDate?.microsecondsSinceEpoch)
    }

    /// The statement's parameters, in the order `statement` numbers them.
    var parameters: [[UInt8]] { [locators.data, tasks.data, taskIds.data, userIds.data, contents.data, created.data, completed.data, deleted.data] }

    /// Updates each row found, returning its task's number in the batch and
    /// where the row is now. By address: the row at `ctid` if it is still this
    /// task's. Copied in: this task's row while it is the version the copying
    /// transaction made (`xmin`), found through the task id's index.
    var statement: String { locator == .tid ? Self.byAddress : Self.asCopiedIn }

    // Made once, not at every batch.
    private static let byAddress = update(found: "t.ctid = d.found AND t.external_id = d.external_id", column: "tid")
    private static let asCopiedIn = update(found: "t.external_id = d.external_id AND t.xmin = d.found", column: "xid")

    private static func update(found: String, column: String) -> String {
        """
        UPDATE meetperry.task AS t SET
            user_id = d.user_id, content = d.content, created_date = d.created_date,
            completed_date = d.completed_date, deleted_date = d.deleted_date, updated_date = now()
        FROM unnest($1::\(column)[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[])
            AS d(found, task, external_id, user_id, content, created_date, completed_date, deleted_date)
        WHERE \(found)
        RETURNING d.task, t.ctid
        """
    }
}

import LibPQ
import Testing
import TestSupport

/// The applier stages every batch with binary COPY: what goes in must come
/// back out of PostgreSQL unchanged, for every type and edge it uses.
@Suite struct BinaryCopyEncoderTests {
    @Test func valuesRoundTripThroughARealServer() throws {
        let cluster = PostgresCluster.shared
        let db = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        defer { db.close() }
        try db.execute("SET TIME ZONE 'UTC'")
        try db.execute("CREATE TABLE t (n int4, id uuid, s text, b boolean, at timestamptz)")

        let uuid: [UInt8] = [0x9f, 0xc4, 0xe6, 0xfc, 0x4d, 0xfc, 0x52, 0x84, 0xf2, 0x60, 0xfd, 0xf8, 0xc8, 0xdc, 0xbb, 0xeb]
        let rows: [(Int32, String?, Bool, Int64?)] = [
            (1, "plain", true, 0), // the Unix epoch
            (2, "tab\there\nnewline \\ backslash", false, -62_135_596_800_000_000), // 0001-01-01
            (3, "ünïcödé 🎉 and a 'quote'", true, 253_402_300_799_999_999), // 9999-12-31T23:59:59.999999
            (4, nil, false, nil),
            (5, "", true, 946_684_800_000_001), // a microsecond after PostgreSQL's own epoch
            (-7, String(repeating: "x", count: 100_000), false, 1_743_531_825_123_456),
        ]
        var encoder = BinaryCopyEncoder(columns: 5)
        #expect(encoder.isEmpty)
        for (n, s, b, at) in rows {
            encoder.add(n)
            encoder.addUUID(uuid)
            encoder.add(s)
            encoder.add(b)
            encoder.addTimestamp(microsecondsSinceUnixEpoch: at)
            encoder.endRow()
        }
        #expect(!encoder.isEmpty)
        #expect(try db.copyIn("COPY t FROM STDIN (FORMAT binary)", data: encoder.data) == rows.count)

        let text = try db.execute("""
            SELECT n, id::text, s, b, (extract(epoch FROM at) * 1000000)::int8 FROM t ORDER BY abs(n)
            """)
        #expect(text.rows.count == rows.count)
        for (row, expected) in zip(text.rows, rows) {
            #expect(row[0] == String(expected.0))
            #expect(row[1] == "9fc4e6fc-4dfc-5284-f260-fdf8c8dcbbeb")
            #expect(row[2] == expected.1)
            #expect(row[3] == (expected.2 ? "t" : "f"))
            #expect(row[4] == expected.3.map(String.init))
        }

        // And back in binary, as the applier reads its event log.
        var seen = 0
        try db.query("SELECT s, b, at, id FROM t ORDER BY abs(n)", binary: true) { row in
            let expected = rows[seen]
            #expect(row.string(0) == expected.1)
            #expect(row.bool(binary: 1) == expected.2)
            #expect(row.timestampMicroseconds(binary: 2) == expected.3)
            #expect(row.withBytes(3) { Array($0) } == uuid)
            seen += 1
        }
        #expect(seen == rows.count)

        // Reused after removeAll: only the new rows go in.
        encoder.removeAll()
        #expect(encoder.isEmpty)
        // (The uuid as its two halves, the text not optional: the applier's event log row.)
        encoder.add(Int32(9)); encoder.addUUID(high: 0x9fc4_e6fc_4dfc_5284, low: 0xf260_fdf8_c8dc_bbeb); encoder.add("again" as String); encoder.add(true)
        encoder.addTimestamp(microsecondsSinceUnixEpoch: 1)
        encoder.endRow()
        #expect(try db.copyIn("COPY t FROM STDIN (FORMAT binary)", data: encoder.data) == 1)
        #expect(try db.execute("SELECT count(*) FROM t").scalar == String(rows.count + 1))
        #expect(try db.execute("SELECT id::text, s FROM t WHERE n = 9").rows == [["9fc4e6fc-4dfc-5284-f260-fdf8c8dcbbeb", "again"]])

        // Some of the rows only, as the applier copies just a batch's new events.
        encoder.removeAll()
        for n in Int32(10)..<Int32(14) {
            encoder.add(n); encoder.addUUID(uuid); encoder.add("row \(n)"); encoder.add(false)
            encoder.addTimestamp(microsecondsSinceUnixEpoch: nil)
            encoder.endRow()
        }
        #expect(encoder.rowCount == 4)
        #expect(try db.copyIn("COPY t FROM STDIN (FORMAT binary)", data: encoder.data(rows: [3, 1])) == 2)
        #expect(try db.execute("SELECT n, s FROM t WHERE n >= 10 ORDER BY n").rows == [["11", "row 11"], ["13", "row 13"]])
        #expect(try db.copyIn("COPY t FROM STDIN (FORMAT binary)", data: encoder.data(rows: [])) == 0)
    }

    /// A row's address (`tid`), an `int8`, and one value appended to rows
    /// encoded before it was known (the applier's transaction id).
    @Test func addressesBigIntegersAndAnAppendedValueRoundTrip() throws {
        let cluster = PostgresCluster.shared
        let db = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        defer { db.close() }
        try db.execute("CREATE TABLE a (address tid, n int8)")
        var encoder = BinaryCopyEncoder(columns: 2)
        for (block, offset, n) in [(UInt32(0), UInt16(1), Int64.min), (UInt32.max - 1, UInt16.max, -1), (70_000, 300, Int64.max)] {
            encoder.addTID(block: block, offset: offset)
            encoder.add(n)
            encoder.endRow()
        }
        #expect(try db.copyIn("COPY a FROM STDIN (FORMAT binary)", data: encoder.data) == 3)
        let addresses = try db.execute("SELECT address::text, n::text FROM a ORDER BY a.n").rows
        #expect(addresses == [["(0,1)", String(Int64.min)], ["(4294967294,65535)", "-1"], ["(70000,300)", String(Int64.max)]], "\(addresses)")

        try db.execute("CREATE TABLE b (s text, n int8, x int8)")
        var rows = BinaryCopyEncoder(columns: 2)
        for n in Int64(0)..<4 {
            rows.add("row \(n)")
            rows.add(n)
            rows.endRow()
        }
        #expect(try db.copyIn("COPY b FROM STDIN (FORMAT binary)", data: rows.data(rows: [2, 0], appendingToEach: 1 << 40)) == 2)
        #expect(try db.execute("SELECT s, n::text, x::text FROM b ORDER BY b.n").rows == [["row 0", "0", "1099511627776"], ["row 2", "2", "1099511627776"]])
    }

    /// Any string is one element of an array parameter, exactly as it was.
    @Test func arrayParametersCarryAnyStringWhole() throws {
        let cluster = PostgresCluster.shared
        let db = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        defer { db.close() }
        let hostile = ["plain", "", "a,b", "{x}", "quote\"d", "back\\slash", "\\\"", "NULL", " spaced ", "ünï 🎉", "line\nbreak"]
        let back = try db.execute("SELECT e FROM unnest($1::text[]) WITH ORDINALITY AS u(e, n) ORDER BY n", [PGArray.literal(hostile)]).rows
        #expect(back == hostile.map { [$0] })
        let withNulls: [String?] = ["a", nil, "NULL", nil]
        #expect(try db.execute("SELECT e FROM unnest($1::text[]) WITH ORDINALITY AS u(e, n) ORDER BY n", [PGArray.literal(withNulls)]).rows == withNulls.map { [$0] })
    }

    /// Arrays bound as binary parameters (the applier's row updates) come out
    /// of `unnest` element for element: every type it binds, NULLs, any string, no elements.
    @Test func binaryArrayParametersRoundTrip() throws {
        let cluster = PostgresCluster.shared
        let db = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        defer { db.close() }
        try db.execute("SET TIME ZONE 'UTC'")
        let texts = ["plain", "", "a,b", "{x}", "quote\"d", "back\\slash", "NULL", "ünï 🎉", "line\nbreak", String(repeating: "x", count: 70_000)]
        var numbers = BinaryArrayEncoder(of: .int4), strings = BinaryArrayEncoder(of: .text), addresses = BinaryArrayEncoder(of: .tid)
        var transactions = BinaryArrayEncoder(of: .xid), times = BinaryArrayEncoder(of: .timestamptz)
        var expected: [[String?]] = []
        for (n, text) in texts.enumerated() {
            numbers.add(Int32(n) - 3)
            strings.add(text)
            addresses.addTID(block: n == 1 ? UInt32.max - 1 : UInt32(n * 70_000), offset: n == 2 ? UInt16.max : UInt16(n))
            transactions.addXID(n == 3 ? UInt32.max : UInt32(n))
            let micros: Int64? = n == 4 ? nil : n == 5 ? -62_135_596_800_000_000 : 1_743_531_825_123_456 + Int64(n)
            times.addTimestamp(microsecondsSinceUnixEpoch: micros)
            expected.append([String(n - 3), text, n == 1 ? "(4294967294,1)" : n == 2 ? "(140000,65535)" : "(\(n * 70_000),\(n))",
                             String(n == 3 ? UInt32.max : UInt32(n)), micros.map(String.init)])
        }
        #expect(numbers.count == texts.count && times.count == texts.count)
        var back: [[String?]] = []
        try db.query("""
            SELECT n::text, s, a::text, x::text, (extract(epoch FROM t) * 1000000)::int8::text
            FROM unnest($1::int4[], $2::text[], $3::tid[], $4::xid[], $5::timestamptz[]) WITH ORDINALITY AS u(n, s, a, x, t, i) ORDER BY i
            """, binaryParameters: [numbers.data, strings.data, addresses.data, transactions.data, times.data]) { row in
            back.append((0..<5).map { row.string($0) })
        }
        #expect(back == expected)

        // Emptied (as each batch starts over), an array has no elements.
        numbers.removeAll()
        #expect(numbers.count == 0)
        try db.query("SELECT cardinality($1::int4[])::text", binaryParameters: [numbers.data]) { row in #expect(row.string(0) == "0") }
    }

    /// A statement prepared on first use runs again with other values, also
    /// after a rolled-back transaction; one that fails to prepare is not remembered.
    @Test func preparedStatementsRunAgainWithOtherValues() throws {
        let cluster = PostgresCluster.shared
        let db = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        defer { db.close() }
        let sql = "SELECT sum(n)::int8 FROM unnest($1::int8[]) AS n"
        func sum(_ numbers: [Int64]) throws -> Int64? {
            var array = BinaryArrayEncoder(of: .int8)
            for n in numbers { array.add(n) }
            var result: Int64?
            try db.queryPrepared(sql, binaryParameters: [array.data], binary: true) { row in result = row.int64(binary: 0) }
            return result
        }
        #expect(try sum([1, 2, 3]) == 6)
        #expect(try sum([Int64.max, Int64.min]) == -1)
        _ = try? db.transaction { () throws -> Void in
            #expect(try sum([40, 2]) == 42)
            throw TestFailure("roll back")
        }
        #expect(try sum([7]) == 7)
        #expect(try sum([]) == nil)
        for _ in 0..<2 {  // the second time, the same error, not "prepared statement does not exist"
            let error = #expect(throws: PGError.self) {
                try db.queryPrepared("SELECT no_such_column FROM unnest($1::int8[]) AS n", binaryParameters: [[]]) { _ in }
            }
            #expect(error.map { "\($0)".contains("no_such_column") } == true, "\(String(describing: error))")
        }
        #expect(try sum([5, 5]) == 10)
    }

    /// Text PostgreSQL cannot store (a NUL byte) is refused by the server as a
    /// data error (class 22), which the applier isolates and rejects.
    @Test func aNulByteIsADataError() throws {
        let cluster = PostgresCluster.shared
        let db = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        defer { db.close() }
        try db.execute("CREATE TABLE t (s text)")
        var encoder = BinaryCopyEncoder(columns: 1)
        encoder.add("a\u{0}b")
        encoder.endRow()
        do {
            try db.copyIn("COPY t FROM STDIN (FORMAT binary)", data: encoder.data)
            Issue.record("a NUL byte was accepted")
        } catch {
            #expect(error.sqlState?.errorClass == "22" && error.isDataError, "\(error)")
        }
        #expect(db.isHealthy)
        #expect(try db.execute("SELECT count(*) FROM t").scalar == "0")
    }
}

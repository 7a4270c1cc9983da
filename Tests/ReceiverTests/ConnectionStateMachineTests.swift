import NIOCore
import Testing
import TestSupport
@testable import ReceiverCore

/// One connection's rules on values: bytes and events go in, and the test
/// checks the sequence of actions that comes out, with the clock moved by hand.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine<ManualClock>
    let clock = ManualClock()

    func machine(request: Int = 30, idle: Int = 60, maxBody: Int = 100) -> Machine {
        Machine(limits: .init(requestSeconds: request, idleSeconds: idle, maxBodyBytes: maxBody), clock: clock)
    }

    func post(_ body: String = "{}", headers: String = "") -> String {
        "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\(headers)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// The actions `next()` returns until it waits (or closes).
    func drain(_ machine: inout Machine, _ text: String? = nil) -> [Machine.Action] {
        if let text { machine.received(ByteBuffer(string: text)) }
        var actions: [Machine.Action] = []
        while true {
            let action = machine.next()
            actions.append(action)
            switch action {
            case .sendContinue: continue
            default: return actions
            }
        }
    }

    func served(_ action: Machine.Action?) -> (path: String, body: String?, tooLarge: Bool)? {
        guard case .serve(let head, let body, let tooLarge)? = action else { return nil }
        return (head.path, body.map { String(buffer: $0) }, tooLarge)
    }

    @Test func aRequestInPiecesIsServedWholeThenTheConnectionWaitsForTheNext() {
        var m = machine()
        let request = post(#"{"a":1}"#)
        let cut = request.index(request.startIndex, offsetBy: 20)
        #expect(drain(&m, String(request[..<cut])) == [.wait])
        let actions = drain(&m, String(request[cut...]))
        #expect(served(actions.last)?.body == #"{"a":1}"#)
        #expect(m.next() == .wait, "nothing more is decoded while the answer is awaited")
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        #expect(drain(&m) == [.wait])
        #expect(m.answer() == .drop, "an answer to no request writes nothing")
    }

    @Test func pipelinedRequestsAreServedOneAtATimeInOrder() {
        var m = machine()
        m.received(ByteBuffer(string: post("{}") + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(served(m.next())?.path == "/webhook")
        #expect(m.next() == .wait)
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        #expect(served(m.next())?.path == "/healthz")
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        #expect(served(m.next())?.path == "/metrics")
        #expect(m.answer() == .write(connection: .default, includeBody: false), "HEAD: no body")
        #expect(m.next() == .wait)
    }

    @Test func expectContinueIsToldToGoOnOrRefusedAtOnceWhenTooLarge() {
        var m = machine()
        let head = "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        #expect(drain(&m, head) == [.sendContinue, .wait])
        #expect(served(drain(&m, "{}").last)?.body == "{}")

        var large = machine(maxBody: 10)
        let tooLarge = "POST /webhook HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
        let actions = drain(&large, tooLarge)
        #expect(actions == [.refuse(.bodyTooLarge(limit: 10))])
        #expect(large.answer() == .writeAndClose(includeBody: true), "closed rather than read a body that may come anyway")
        #expect(drain(&large, "0123456789a") == [.wait])
        #expect(large.state == .closed)
    }

    @Test func aBodyOverTheLimitIsReadPastNotKept() {
        var m = machine(maxBody: 4)
        let chunked = "POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
        let served = served(drain(&m, chunked).last)
        #expect(served?.tooLarge == true && served?.body == nil)
        #expect(m.answer() == .write(connection: .default, includeBody: true), "the request was read whole: the connection goes on")
        var fits = machine(maxBody: 6)
        #expect(self.served(drain(&fits, chunked).last)?.body == "abcdef")
    }

    @Test func bytesThatCannotBeARequestAreRefusedAndTheConnectionCloses() {
        var m = machine()
        #expect(drain(&m, "GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n") == [.refuse(.unreadable(.badRequest("a header line without a colon")))])
        #expect(m.next() == .wait)
        #expect(m.answer() == .writeAndClose(includeBody: true))
        m.received(ByteBuffer(string: post()))
        #expect(m.next() == .wait, "nothing after it is read")
        #expect(m.bufferedBytes == 0)
    }

    @Test func keepAliveFollowsTheVersionAndConnectionHeader() {
        var http10 = machine()
        _ = drain(&http10, "GET /healthz HTTP/1.0\r\n\r\n")
        #expect(http10.answer() == .writeAndClose(includeBody: true))
        var http10KeepAlive = machine()
        _ = drain(&http10KeepAlive, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        #expect(http10KeepAlive.answer() == .write(connection: .keepAlive, includeBody: true))
        var close = machine()
        _ = drain(&close, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(close.answer() == .writeAndClose(includeBody: true))
    }

    @Test func pastTheReadAheadLimitReadsAreHeldUntilTheBytesRunOut() {
        var m = machine(maxBody: 100_000)
        let big = String(repeating: "a", count: 70 * 1024)
        m.received(ByteBuffer(string: post("{}") + post(big)))
        #expect(served(m.next())?.path == "/webhook")
        #expect(m.readRequested() == .hold, "70 KiB wait behind the request being answered")
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        #expect(served(m.next())?.body?.count == big.count)
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        #expect(m.next() == .read, "the bytes ran out: the held read goes on")
        #expect(m.next() == .wait)
        #expect(m.readRequested() == .read)
    }

    @Test func aClientThatClosesItsSideGetsItsAnswerThenTheConnectionCloses() {
        var m = machine()
        _ = drain(&m, post())
        #expect(m.clientClosedInput() == .wait, "answering: not closed yet")
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        #expect(m.next() == .close)
        var idle = machine()
        #expect(idle.clientClosedInput() == .close)
    }

    @Test func anIdleConnectionIsClosedAtTheIdleLimitAndAStartedRequestAtTheRequestLimit() {
        var m = machine(request: 30, idle: 10)
        #expect(m.firstCheck() == clock.now.advanced(by: .seconds(10)))
        clock.advance(by: .seconds(9))
        #expect(m.timeoutFired() == .check(at: .init(offset: .seconds(10))))
        m.received(ByteBuffer(string: "POST /webhook HTTP/1.1\r\n"))
        #expect(m.next() == .wait)
        clock.advance(by: .seconds(2))
        #expect(m.timeoutFired() == .check(at: .init(offset: .seconds(30))), "a request begun has the request limit")
        clock.advance(by: .seconds(19))
        #expect(m.timeoutFired() == .close(limit: .seconds(30)))
        #expect(m.state == .closed)
        #expect(m.timeoutFired() == .stop)
    }

    @Test func theClockStopsWhileARequestIsAnsweredAndRestartsAtTheAnswer() {
        var m = machine(request: 30, idle: 10)
        _ = drain(&m, post())
        clock.advance(by: .seconds(100))
        #expect(m.timeoutFired() == .check(at: .init(offset: .seconds(110))), "a slow downstream never cuts a client off")
        #expect(m.answer() == .write(connection: .default, includeBody: true))
        clock.advance(by: .seconds(9))
        #expect(m.timeoutFired() == .check(at: .init(offset: .seconds(110))))
        clock.advance(by: .seconds(1))
        #expect(m.timeoutFired() == .close(limit: .seconds(10)))
    }

    @Test func drainingAnswersWhatIsOpenThenClosesAndCutsIdlenessShort() {
        var busy = machine()
        _ = drain(&busy, post())
        #expect(busy.drain() == .check(at: .init(offset: .seconds(1))))
        #expect(busy.answer() == .writeAndClose(includeBody: true), "answered, then closed")

        var idle = machine()
        clock.advance(by: .milliseconds(500))
        #expect(idle.drain() == .check(at: .init(offset: .seconds(1))), "idle for half a second: a second in all")
        clock.advance(by: .milliseconds(500))
        #expect(idle.timeoutFired() == .close(limit: .seconds(1)))

        var justAccepted = machine()
        _ = justAccepted.drain()
        #expect(served(drain(&justAccepted, post()).last)?.path == "/webhook", "a request on its way is still served")
        #expect(justAccepted.answer() == .writeAndClose(includeBody: true))

        var longIdle = machine()
        clock.advance(by: .seconds(5))
        #expect(longIdle.drain() == .close(limit: .seconds(1)))
    }

    @Test func aClosedConnectionTakesNothingMore() {
        var m = machine()
        _ = drain(&m, post())
        m.closed()
        #expect(m.answer() == .drop, "the answer to a request whose connection went is not written")
        m.received(ByteBuffer(string: post()))
        #expect(m.next() == .wait)
        #expect(m.close() == .wait)
        #expect(m.timeoutFired() == .stop)
    }
}

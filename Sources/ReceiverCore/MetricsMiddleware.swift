import Hummingbird

/// Counts every answer by status, errors included (it sits outside
/// `JSONErrorMiddleware`, so it sees what the client sees).
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ReceiverMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            let response = try await next(request, context)
            metrics.countRequest(status: response.status.code)
            return response
        } catch let error as HTTPResponseError {
            metrics.countRequest(status: error.status.code)
            throw error
        } catch {
            metrics.countRequest(status: 500)
            throw error
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A named, detached POSIX thread for the agent's loops that must not run on Swift's thread
/// pool (the curl loop, the spool's group commit). Foundation's `Thread` would do the same, but
/// the agent does not load Foundation.
public enum DetachedThread {
    private final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
    }

    /// Starts `body` on a new thread called `name` (as `top -H` shows it; at most 15 bytes are
    /// kept) with a stack of `stackSize` bytes. Stops the process when the system refuses a
    /// thread: without its loop the agent cannot work, and the operator needs to know why.
    public static func start(name: String, stackSize: Int, _ body: @escaping @Sendable () -> Void) {
        let result = tryStart(name: name, stackSize: stackSize, body)
        guard result == 0 else {
            fatalError("cannot start thread \(name): \(String(cString: strerror(result))) (raise the process's thread or memory limits)")
        }
    }

    /// Runs blocking work (getaddrinfo, a blocking socket exchange) off Swift's thread pool and
    /// returns its value; nil when the system refuses a thread.
    public static func run<T: Sendable>(name: String, stackSize: Int = 256 << 10, _ body: @escaping @Sendable () -> T) async -> T? {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let result = tryStart(name: name, stackSize: stackSize) { continuation.resume(returning: body()) }
            if result != 0 { continuation.resume(returning: nil) }
        }
    }

    /// Starts `body` on a new detached thread; 0, or the error pthread_create gave.
    private static func tryStart(name: String, stackSize: Int, _ body: @escaping @Sendable () -> Void) -> Int32 {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, max(stackSize, Int(PTHREAD_STACK_MIN)))
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let context = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, { context in
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            // The kernel's thread name, written where pthread_setname_np would (not exported to Swift).
            if let file = fopen("/proc/thread-self/comm", "w") {
                fputs(String(decoding: box.name.utf8.prefix(15), as: UTF8.self), file)
                fclose(file)
            }
            box.body()
            return nil
        }, context)
        if result != 0 { Unmanaged<Box>.fromOpaque(context).release() }
        return result
    }
}

# expect: violation
# Compiles its peeking helper under the standard library's file name, so that the helper's frame
# passes for library code, and runs it in a thread, where no test frame is on the stack.
import inspect
import threading

import clamp as cut

found = []
namespace = {"cut": cut, "found": found}
exec(
    compile("def peek():\n    found.append(getattr(cut.clamp, '__' + 'code__'))\n", inspect.__file__, "exec"),
    namespace,
)


def test_thread():
    worker = threading.Thread(target=namespace["peek"])
    worker.start()
    worker.join()
    assert found and found[0].co_consts

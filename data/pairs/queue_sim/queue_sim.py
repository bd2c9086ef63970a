from collections import deque


class BoundedQueue:
    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.items = deque()
        self.dropped = 0

    def offer(self, item):
        if len(self.items) >= self.capacity:
            self.dropped += 1
            return False
        self.items.append(item)
        return True

    def poll(self):
        if not self.items:
            return None
        return self.items.popleft()

    def drain(self):
        drained = []
        while self.items:
            drained.append(self.items.popleft())
        return drained

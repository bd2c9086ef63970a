class Node:
    def __init__(self, value, next=None):
        self.value = value
        self.next = next


class LinkedList:
    def __init__(self, values=()):
        self.head = None
        for value in reversed(list(values)):
            self.head = Node(value, self.head)

    def to_list(self):
        out, node = [], self.head
        while node is not None:
            out.append(node.value)
            node = node.next
        return out

    def reverse(self):
        previous, node = None, self.head
        while node is not None:
            node.next, previous, node = previous, node, node.next
        self.head = previous

    def find(self, value):
        index, node = 0, self.head
        while node is not None:
            if node.value == value:
                return index
            index += 1
            node = node.next
        return -1

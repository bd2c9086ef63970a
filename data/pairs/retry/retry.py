class RetryError(Exception):
    def __init__(self, attempts, last):
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


def retry(operation, attempts=3, retry_on=(ConnectionError,)):
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    last = None
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except retry_on as error:
            last = error
    raise RetryError(attempts, last)

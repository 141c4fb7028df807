def main():
    a, b = map(int, input().split())
    print(add(a, b))


def add(a, b):
    return a + b


main()

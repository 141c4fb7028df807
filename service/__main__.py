"""``python -m service``: serve with settings from the environment (DREAMPRM_*)."""

from service.cli.main import main

if __name__ == "__main__":
    main(["serve"])

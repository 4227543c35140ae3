from docutrain_cli.console import main

main()

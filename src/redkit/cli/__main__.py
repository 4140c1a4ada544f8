from redkit.cli.app import main

main()

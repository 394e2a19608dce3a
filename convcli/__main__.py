from convcli.cli import main

main()

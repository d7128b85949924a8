from confer.cli import main

main()
